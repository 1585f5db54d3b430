"The fast path's defaults (issue 18): biases from the baseline, never worse than it on sparse data, the choice recorded"
import math, warnings
import numpy as np, pandas as pd, pytest, torch
from fastai.torch_core import set_seed
from fastai.layers import sigmoid_range
from fastai_cf.data import CFDataLoaders, synth_ratings, default_bs
from fastai_cf.learner import cf_learner, baseline_biases, init_biases, CF_LR, CF_LR_IMPLICIT, CF_BIAS_REG, default_y_range
import fastai_cf.learner

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
    assert d['lr'] == CF_LR and not d['implicit'] and d['bias_reg'] == CF_BIAS_REG and f'default_bs of {n:,} rows' in d['why']
    assert learn.dls.train.x.data_ptr() == dls.train.x.data_ptr()     # the same tensors
    given = cf_learner(CFDataLoaders.from_df(df, seed=42, bs=128))
    assert given.dls.train.bs == 128 and 'default_bs' not in given.cf_defaults['why']
    assert cf_learner(dls, fast=False).cf_defaults is None
    assert cf_learner(dls, lr=1e-3).cf_defaults['lr'] == 1e-3
    assert [m.name for m in learn.metrics] == ['rmse']

def test_implicit_term_by_size_and_density(monkeypatch):
    "On up to CF_IMPLICIT_ROWS training ratings whose median user has CF_KNOWN_USER, the default model has the implicit term (and its lr)"
    dls = CFDataLoaders.from_df(synth_ratings(100, 200, 6_000, seed=5), seed=42)
    on = cf_learner(dls)
    assert on.model.implicit is not None and on.lr == CF_LR_IMPLICIT and 'implicit feedback on' in on.cf_defaults['why']
    thin = cf_learner(CFDataLoaders.from_df(synth_ratings(1000, 500, 20_000, seed=1), seed=42))
    assert not thin.cf_defaults['implicit'] and 'implicit feedback off (median user 13 training ratings < CF_KNOWN_USER 30)' in thin.cf_defaults['why']
    monkeypatch.setattr(fastai_cf.learner, 'CF_IMPLICIT_ROWS', 1000)
    off = cf_learner(dls)
    assert getattr(off.model, 'implicit', None) is None and off.lr == CF_LR and not off.cf_defaults['implicit']
    assert 'implicit feedback off (4,800 training ratings > CF_IMPLICIT_ROWS 1,000)' in off.cf_defaults['why']
    asked = cf_learner(dls, implicit=True)
    assert asked.model.implicit is not None and 'implicit feedback on (asked)' in asked.cf_defaults['why']
    stock = cf_learner(dls, fast=False, implicit=True)       # any optimizer: the term's gradient is dense
    with stock.no_bar(), stock.no_logging(): stock.fit(1, 1e-2)
    assert not hasattr(stock.model, 'implicit') and len(stock.opt.all_params()) == 4

def test_implicit_term_folds_after_a_fit_only(tmp_path):
    "validate, get_preds and lr_find keep the term; a fit folds it, takes it out of the optimizer, and predicts the same"
    from fastai.learner import load_learner
    dls = CFDataLoaders.from_df(synth_ratings(100, 200, 6_000, seed=5), seed=42)
    set_seed(0)
    learn = cf_learner(dls, path=tmp_path)
    with learn.no_bar():
        learn.validate(); learn.get_preds()
        learn.lr_find(show_plot=False)
    assert learn.model.implicit is not None
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2)
    last = learn.recorder.values[-1][1]
    assert not hasattr(learn.model, 'implicit')
    assert not any(p.shape == (len(dls.classes['movieId']), learn.model.n_factors) and p is not learn.model.i_weight.weight
                   for pl in learn.opt.param_lists for p in pl)
    with learn.no_bar(): assert learn.validate()[0] == pytest.approx(last, rel=1e-5)
    learn.export(tmp_path/'m.pkl')                          # the optimizer holds the model's parameters only
    x = dls.valid.x[:50]
    assert torch.allclose(load_learner(tmp_path/'m.pkl').model.eval()(x), learn.model.eval()(x))
    learn.save('m', with_opt=True); learn.load('m', with_opt=True)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1)    # a second fit, without the term

def test_unfolded_term_is_saved_folded(tmp_path):
    "A model file written while the term is still attached (a fit stopped early) predicts what the model predicted"
    from fastai_cf.modelfile import save_cf, load_cf
    dls = CFDataLoaders.from_df(synth_ratings(100, 200, 6_000, seed=5), seed=42)
    learn = cf_learner(dls)
    with torch.no_grad(): learn.model.implicit.weight.normal_(0, 0.1)
    x = dls.valid.x[:50]
    want = learn.model.eval()(x)
    save_cf(learn, tmp_path/'m.cf')
    assert torch.allclose(load_cf(tmp_path/'m.cf').model.eval()(x), want, atol=1e-6)
