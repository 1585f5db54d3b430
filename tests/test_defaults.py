"The fast path's defaults (issue 18): biases from the baseline, never worse than it on sparse data, the choice recorded"
import math, warnings
import numpy as np, pandas as pd, pytest, torch
from fastai.torch_core import set_seed
from fastai.layers import sigmoid_range
from fastai_cf.data import CFDataLoaders, synth_ratings, default_bs
from fastai_cf.learner import cf_learner, baseline_biases, init_biases, CF_LR, CF_BIAS_REG, default_y_range

def skewed(n_users, n_items, n_ratings, alpha=1.0, mu=4.0, step=1.0, seed=0):
    "Both sides Zipf(`alpha`): at ~1 the median user and the median item have one rating"
    rng = np.random.default_rng(seed)
    def draw(n):
        p = 1/np.arange(1, n+1)**alpha; p /= p.sum()
        return rng.permutation(n)[np.minimum(np.searchsorted(np.cumsum(p), rng.random(n_ratings)), n-1)]
    u,i = draw(n_users),draw(n_items)
    ub,ib = rng.normal(0, 0.5, n_users),rng.normal(0, 0.6, n_items)
    U,I = rng.normal(size=(n_users, 4))/2**0.5,rng.normal(size=(n_items, 4))/2**0.5
    r = mu + ub[u] + ib[i] + (U[u]*I[i]).sum(1) + 0.9*rng.standard_normal(n_ratings)
    return pd.DataFrame({'user': u, 'item': i, 'rating': np.clip(np.round(r/step)*step, step, 5).astype(np.float32)})

def baseline_only(xt, yt, xv, reg_u=15., reg_i=10., iters=10):
    "Surprise's BaselineOnly (ALS, its defaults), in numpy: the reference the default must match on sparse data"
    mu = yt.mean()
    bu,bi = np.zeros(xt[:,0].max()+1 if len(xt) else 1),np.zeros(xt[:,1].max()+1 if len(xt) else 1)
    for _ in range(iters):
        bi = np.bincount(xt[:,1], yt - mu - bu[xt[:,0]], len(bi)) / (np.bincount(xt[:,1], minlength=len(bi)) + reg_i)
        bu = np.bincount(xt[:,0], yt - mu - bi[xt[:,1]], len(bu)) / (np.bincount(xt[:,0], minlength=len(bu)) + reg_u)
    get = lambda b, k: np.where(k < len(b), b[np.minimum(k, len(b)-1)], 0.)
    return mu + get(bu, xv[:,0]) + get(bi, xv[:,1])

def fit_rmse(dls):
    set_seed(42)
    learn = cf_learner(dls)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(5)
    with learn.no_bar(): return math.sqrt(learn.validate()[0]),learn

def reference_rmse(dls):
    xt,yt = dls.train.x.numpy(),dls.train.y.view(-1).double().numpy()
    xv,yv = dls.valid.x.numpy(),dls.valid.y.view(-1).double().numpy()
    lo,hi = yt.min(),yt.max()
    return float(np.sqrt(((np.clip(baseline_only(xt, yt, xv), lo, hi) - yv)**2).mean()))

@pytest.mark.parametrize('seed', [0, 1])
def test_never_worse_than_the_baseline_on_very_sparse_data(seed):
    df = skewed(12_000, 12_000, 16_000, seed=seed)
    assert df.user.value_counts().median() == 1 and df.item.value_counts().median() == 1
    dls = CFDataLoaders.from_df(df, seed=42)
    assert dls.n_valid_unseen > 0.3*len(dls.valid.x)     # many validation rows have an unseen user or item
    got,_ = fit_rmse(dls)
    assert got <= reference_rmse(dls), (got, reference_rmse(dls))

@pytest.mark.parametrize('lo,hi,step', [(0.5, 4, 0.5), (1, 10, 1)])
def test_other_scales_beat_the_baseline(lo, hi, step):
    df = synth_ratings(800, 600, 12_000, noise=0.7, alpha=1.0, seed=3)
    df['rating'] = (np.round((lo + (df.rating - 0.5)*(hi - lo)/4.5 - lo)/step)*step + lo).clip(lo, hi)
    dls = CFDataLoaders.from_df(df, seed=42)
    got,learn = fit_rmse(dls)
    assert got < reference_rmse(dls)
    test = learn.cf_defaults
    assert test['y_range'] == pytest.approx(default_y_range(dls))
    assert abs(test['global_mean'] - dls.train.y.mean().item()) < 1e-3

def test_unseen_rows_predict_the_baseline():
    "Row 0 ('#na#') and rows never trained: no factor contribution; a pair of them predicts about the mean"
    df = skewed(3000, 3000, 5000, seed=2)
    dls = CFDataLoaders.from_df(df, seed=42)
    _,learn = fit_rmse(dls)
    m,mean = learn.model,dls.train.y.mean().item()
    assert m.u_weight.weight[0].abs().max() < 1e-3 and m.i_weight.weight[0].abs().max() < 1e-3
    g = baseline_biases(dls, m.y_range)[0]     # the baseline's intercept: near the mean (the sigmoid bends it)
    assert abs(m(torch.tensor([[0, 0]])).item() - sigmoid_range(torch.tensor(g), *m.y_range).item()) < 0.01
    assert abs(m(torch.tensor([[0, 0]])).item() - mean) < 0.15
    # an unknown user with a known item: the mean moved by that item's bias, the same way as the baseline moves it
    _,bu,bi = baseline_biases(dls, m.y_range)
    item = int(torch.bincount(dls.train.x[:,1]).argmax())
    want = sigmoid_range(torch.tensor(g + bi[item].item()), *m.y_range).item()
    assert abs(m(torch.tensor([[0, item]])).item() - want) < 0.25

def test_baseline_biases_match_surprise_baseline():
    df = synth_ratings(500, 300, 10_000, seed=4)
    dls = CFDataLoaders.from_df(df, seed=42)
    yr = default_y_range(dls)
    g,bu,bi = baseline_biases(dls, yr)
    x,y = dls.valid.x,dls.valid.y.view(-1).double()
    ours = math.sqrt(((sigmoid_range(g + bu[x[:,0]] + bi[x[:,1]], *yr) - y)**2).mean().item())
    assert abs(ours - reference_rmse(dls)) < 0.01

def test_the_choice_is_recorded_and_the_batch_size_is_the_fast_paths():
    df = synth_ratings(500, 300, 10_000, seed=4)
    dls = CFDataLoaders.from_df(df, seed=42)           # no bs=: fastai's 64 for stock code ...
    learn = cf_learner(dls)
    assert dls.train.bs == 64
    n = len(dls.train.x)
    assert learn.dls.train.bs == default_bs(n) == learn.cf_defaults['bs']    # ... the fast path's own for cf_learner
    d = learn.cf_defaults
    assert d['lr'] == CF_LR and d['bias_reg'] == CF_BIAS_REG and f'default_bs of {n:,} rows' in d['why']
    assert learn.dls.train.x.data_ptr() == dls.train.x.data_ptr()     # the same tensors
    given = cf_learner(CFDataLoaders.from_df(df, seed=42, bs=128))
    assert given.dls.train.bs == 128 and 'default_bs' not in given.cf_defaults['why']
    assert cf_learner(dls, fast=False).cf_defaults is None
    assert cf_learner(dls, lr=1e-3).cf_defaults['lr'] == 1e-3
    assert [m.name for m in learn.metrics] == ['rmse']
