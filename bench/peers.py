"""fastai_cf beside its peers, on the same folds: RMSE, MAE, NDCG@10, precision@10 and fit seconds.

Every model is trained on the same training rows and scored on the same validation rows of each fold
(`cv_folds(df, n_folds, seed)`; on ml-100k, its own u1 ... u5 files):

- fastai_cf's default: `cf_learner(dls)` + `fit_one_cycle(5)`, loaders at their default batch size;
- fastai_cf's DotProduct and DotProductBias (wd=0.1) at the lesson's settings: bs 64, `fast=False`,
  `n_factors=50`, `y_range=(0, 5.5)`, `fit_one_cycle(5, 5e-3)`;
- stock fastai: `collab_learner(n_factors=50, y_range=(0, 5.5))` + `fit_one_cycle(5, 5e-3, wd=0.1)` on fastai's own
  `CollabDataLoaders` (built as `CollabDataLoaders.from_df` does, with the fold's rows as its splits; checked);
- scikit-surprise, when installed: BaselineOnly, SVD (defaults, and DESIGN.md's tuned one), SVD++ and KNNBaseline
  (item-based, pearson_baseline), on the same ids. RMSE/MAE come from `algo.test` (Surprise's clipped predictions);
  ranking scores every candidate item with Surprise's own formulas, vectorized (its `estimate`, unclipped, since
  clipping at 5 stars would tie the top items), checked against `algo.predict` on a sample;
- cornac's `MF` (biased SGD matrix factorisation, its defaults) when cornac is installed, and LensKit's biased ALS
  (`lenskit.als.BiasedMFScorer`, its defaults) when `--lenskit-python` names an interpreter that has LensKit (LensKit
  2025 needs pandas < 3, so it lives in its own environment: `.venv-bench`, found by default; it runs in a
  subprocess, `bench/_lenskit_worker.py`; LensKit refuses repeated pairs, so it trains on their mean). Both predict
  global mean + biases + factors, the unknown side's terms zero; their RMSE/MAE clip to the rating scale as Surprise's.

The process fixes glibc's mmap threshold (`mallopt`) first: training with dense embedding gradients otherwise grows
the heap by about 1 MB per batch (allocator fragmentation), over 10 GB across the lesson-setting rows.

Ranking metrics follow `fastai_cf.metrics.ranking_metrics`: relevant = validation rating >= 4, candidates = every
catalogue item the user did not rate in training, averaged over users with a relevant item. Items are identified by
`title` on ml-latest-small (the lesson's protocol; `--items movieId` to change) and by `movieId` on ml-100k.

    python bench/peers.py                      # ml-latest-small, 5 folds, every model (30+ minutes on 2 cores)
    python bench/peers.py --quick              # 1 fold, the fast models only: a smoke test
    python bench/peers.py --ml100k PATH        # ml-100k (a local folder or zip) on its u1..u5 folds
    python bench/peers.py --models default,SVD --folds 3 --csv folds.csv
    python bench/peers.py --ml100k ../shared/data/ml-100k --skip-mls --models default,cornac,lenskit,surprise

LensKit's environment (it borrows torch and numpy from .venv through a .pth file, and gets its own pandas 2):

    python3 -m venv .venv-bench
    echo $PWD/.venv/lib/python3.11/site-packages > .venv-bench/lib/python3.11/site-packages/zz_main_venv.pth
    .venv-bench/bin/pip install lenskit
"""
import argparse, ctypes, math, time, warnings
warnings.filterwarnings('ignore', category=FutureWarning)   # torch's `jit.script` notice, raised while fastai imports
warnings.filterwarnings('ignore', message='.*repeated.*pair')  # titles shared by two movies: kept, as fastai does
import numpy as np, pandas as pd, torch
from fastai.torch_core import set_seed
from fastai.collab import collab_learner, TabularCollab
from fastai.tabular.core import Categorify
from fastai.data.block import TransformBlock
from fastai_cf.data import CFDataLoaders, load_movielens
from fastai_cf.learner import cf_learner
from fastai_cf.metrics import cross_validate, cv_folds, ml100k_folds, ranking_metrics

try: import cornac
except ImportError: cornac = None
try: import surprise
except ImportError: surprise = None

K = 10

def flat_heap():
    "Keep glibc from growing the heap ~1 MB per batch of dense-embedding training (fragmentation, not a leak: 10+ GB over a run)"
    try: ctypes.CDLL('libc.so.6').mallopt(-3, 1 << 17)   # M_MMAP_THRESHOLD: fixed at 128 KiB, as MALLOC_MMAP_THRESHOLD_=131072 does
    except (OSError, AttributeError): pass
LESSON = dict(n_factors=50, y_range=(0, 5.5))

# ---------------------------------------------------------------- fastai and fastai_cf

def stock_dls(cols):
    "fastai's `CollabDataLoaders.from_df`, step for step, with the fold's rows as the splits"
    u,i,r = cols
    def _dls(df, splits):
        tr,va = splits
        to = TabularCollab(df, [Categorify], [u, i], y_names=[r], y_block=TransformBlock(), splits=(list(tr), list(va)))
        dls = to.dataloaders(path='.', bs=64)
        got = np.sort(dls.valid.items.index.to_numpy())
        assert np.array_equal(got, np.sort(df.index.to_numpy()[va])), "fastai's validation rows differ from the fold's"
        return dls
    return _dls

def fastai_models(cols):
    "name -> (cross_validate keyword arguments)"
    u,i,r = cols
    names = dict(user_name=u, item_name=i, rating_name=r)
    lesson = lambda lr=5e-3, **kw: (lambda learn: learn.fit_one_cycle(5, lr, **kw))
    return {
        'fastai_cf default': dict(learner_fn=cf_learner, fit=5, **names),
        'fastai_cf DotProduct (lesson)': dict(learner_fn=lambda dls: cf_learner(dls, 'dot', fast=False, **LESSON),
                                              fit=lesson(), bs=64, **names),
        'fastai_cf DotProductBias wd=0.1 (lesson)': dict(learner_fn=lambda dls: cf_learner(dls, 'dot_bias', fast=False, wd=0.1, **LESSON),
                                                         fit=lesson(), bs=64, **names),
        'fastai collab_learner (stock)': dict(learner_fn=lambda dls: collab_learner(dls, **LESSON), fit=lesson(wd=0.1),
                                              dls_fn=stock_dls(cols)),
    }

# ---------------------------------------------------------------- scikit-surprise

def surprise_models(seed):
    if surprise is None: return {}
    from surprise import BaselineOnly, SVD, SVDpp, KNNBaseline
    return {
        'Surprise BaselineOnly': lambda: BaselineOnly(verbose=False),
        'Surprise SVD': lambda: SVD(random_state=seed),
        'Surprise SVD (tuned)': lambda: SVD(n_factors=50, reg_all=0.05, lr_all=0.007, n_epochs=40, random_state=seed),
        'Surprise SVD++': lambda: SVDpp(random_state=seed),
        'Surprise KNNBaseline': lambda: KNNBaseline(k=40, sim_options={'name': 'pearson_baseline', 'user_based': False}, verbose=False),
    }

def _inner(get, vocab):
    "Surprise's inner id of each vocab row (-1: unknown to the trainset, and for '#na#')"
    res = np.full(len(vocab), -1, dtype=np.int64)
    for j,o in enumerate(vocab.items):
        if j == 0: continue
        try: res[j] = get(o)
        except ValueError: pass
    return res

def surprise_scorer(algo, uvocab, ivocab):
    "Surprise's `estimate` (unclipped) of every vocab item for a tensor of vocab user rows, one user at a time"
    from surprise import SVD, SVDpp, KNNBaseline
    ts,mu = algo.trainset,algo.trainset.global_mean
    iu,ii = _inner(ts.to_inner_uid, uvocab),_inner(ts.to_inner_iid, ivocab)
    known = ii >= 0
    kn = ii[known]
    bi = np.zeros(len(ivocab)); bi[known] = algo.bi[kn]
    q = algo.qi[kn] if isinstance(algo, (SVD, SVDpp)) else None
    sim = torch.from_numpy(algo.sim) if isinstance(algo, KNNBaseline) else None
    def _user(v):
        s = mu + bi
        if v < 0: return s
        s += algo.bu[v]
        if isinstance(algo, SVD): s[known] += q @ algo.pu[v]
        elif isinstance(algo, SVDpp):
            js = np.array([j for j,_ in ts.ur[v]])
            s[known] += q @ (algo.pu[v] + algo.yj[js].sum(0) / np.sqrt(len(js)))
        elif isinstance(algo, KNNBaseline):
            js,rs = (np.array(o) for o in zip(*ts.ur[v]))
            resid = torch.from_numpy(rs - (mu + algo.bi[js] + algo.bu[v]))
            nb = sim[:, torch.from_numpy(js)]                   # every item's similarity to the user's items
            w,o = nb.topk(min(algo.k, nb.shape[1]), dim=1)      # its k nearest among them
            w = w.clamp(min=0)                                  # only positive similarities count
            den = w.sum(1)
            add = torch.where(den > 0, (w*resid[o]).sum(1) / den.clamp(min=1e-300), 0.)
            s[known] += add.numpy()[kn]
        return s
    return lambda us: torch.from_numpy(np.stack([_user(iu[u]) for u in us.tolist()]))

def check_scorer(algo, score, uvocab, ivocab, n=300, seed=0):
    "Largest difference between the vectorized scores and `algo.predict(clip=False)` on `n` random (user, item) cells"
    rng = np.random.default_rng(seed)
    us,its = rng.integers(1, len(uvocab), n),rng.integers(1, len(ivocab), n)
    s = score(torch.from_numpy(us))
    ref = np.array([algo.predict(uvocab.items[u], ivocab.items[i], clip=False).est for u,i in zip(us, its)])
    return float(np.abs(s[np.arange(n), its].numpy() - ref).max())

def surprise_fold(make, df, cols, fold, scale):
    "Train a Surprise model on the fold's training rows; RMSE/MAE and ranking metrics on its validation rows"
    from surprise import Dataset, Reader, accuracy
    u,i,r = cols
    tr,va = fold
    dls = CFDataLoaders.from_df(df, splits=fold, user_name=u, item_name=i, rating_name=r)   # the catalogue and pairs fastai_cf ranks
    trainset = Dataset.load_from_df(df.iloc[tr][[u, i, r]], Reader(rating_scale=scale)).build_full_trainset()
    algo = make()
    start = time.perf_counter()
    algo.fit(trainset)
    fit_s = time.perf_counter() - start
    preds = algo.test(list(df.iloc[va][[u, i, r]].itertuples(index=False, name=None)))
    uv,iv = dls.classes[u],dls.classes[i]
    score = surprise_scorer(algo, uv, iv)
    diff = check_scorer(algo, score, uv, iv)
    if diff > 1e-6: print(f"  note: vectorized {type(algo).__name__} scores differ from algo.predict by up to {diff:.2g}", flush=True)
    rank = ranking_metrics(score, dls.train.x, dls.valid.x, dls.valid.y.view(-1), k=K, n_items=len(iv), bs=1<<20)
    return pd.concat([pd.Series({'rmse': accuracy.rmse(preds, verbose=False), 'mae': accuracy.mae(preds, verbose=False)}),
                      rank, pd.Series({'fit_s': fit_s})])

# ---------------------------------------------------------------- cornac and LensKit: global mean + biases + factors

class BiasMF:
    "A trained biased MF peer as arrays over fastai_cf's vocab rows: `pred = g + bu[u] + bi[i] + U[u]·V[i]` (unknown rows zero)"
    def __init__(self, g, bu, bi, U, V, fit_s): self.g,self.bu,self.bi,self.U,self.V,self.fit_s = g,bu,bi,U,V,fit_s
    def predict(self, x):
        u,i = x[:,0].numpy(),x[:,1].numpy()
        return self.g + self.bu[u] + self.bi[i] + (self.U[u]*self.V[i]).sum(1)
    def scorer(self):
        return lambda us: torch.from_numpy(self.g + self.bu[us.numpy()][:,None] + self.bi[None] + self.U[us.numpy()] @ self.V.T)

def _on_vocab(n, ids, vals, k=None):
    "Rows `ids` (vocab rows) of an `n`-row array filled with `vals`, zero elsewhere"
    res = np.zeros((n,) if k is None else (n, k))
    res[np.asarray(ids, dtype=np.int64)] = vals
    return res

def cornac_fit(x, y, nu, ni, seed):
    from cornac.data import Dataset
    from cornac.models import MF
    ds = Dataset.from_uir(list(zip(x[:,0].tolist(), x[:,1].tolist(), y.tolist())), seed=seed)
    m = MF(seed=seed)        # its defaults: k=10, 20 epochs of SGD, lr 0.01, lambda 0.02, biases
    start = time.perf_counter()
    m.fit(ds)
    fit_s = time.perf_counter() - start
    uid,iid = list(ds.uid_map.keys()),list(ds.iid_map.keys())
    uix,iix = [ds.uid_map[o] for o in uid],[ds.iid_map[o] for o in iid]
    k = m.u_factors.shape[1]
    return BiasMF(float(m.global_mean), _on_vocab(nu, uid, m.u_biases[uix]), _on_vocab(ni, iid, m.i_biases[iix]),
                  _on_vocab(nu, uid, m.u_factors[uix], k), _on_vocab(ni, iid, m.i_factors[iix], k), fit_s)

LENSKIT_PYTHON = None   # set by --lenskit-python

def lenskit_fit(x, y, nu, ni, seed):
    import subprocess, sys, tempfile, os
    with tempfile.TemporaryDirectory() as d:
        fin,fout = os.path.join(d, 'in.npz'),os.path.join(d, 'out.npz')
        np.savez(fin, u=x[:,0].numpy(), i=x[:,1].numpy(), r=y.numpy())
        worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), '_lenskit_worker.py')
        subprocess.run([LENSKIT_PYTHON, worker, fin, fout, '{}'], check=True, cwd=d, env=dict(os.environ, OMP_NUM_THREADS='1'))
        o = np.load(fout)
        k = o['U'].shape[1]
        return BiasMF(float(o['g']), _on_vocab(nu, o['users'], o['bu']), _on_vocab(ni, o['items'], o['bi']),
                      _on_vocab(nu, o['users'], o['U'], k), _on_vocab(ni, o['items'], o['V'], k), float(o['fit_s']))

def other_models():
    res = {}
    if cornac is not None: res['cornac MF'] = ('biasmf', cornac_fit)
    if LENSKIT_PYTHON: res['LensKit BiasedMF (ALS)'] = ('biasmf', lenskit_fit)
    return res

def biasmf_fold(fit, df, cols, fold, scale, seed):
    "Train a biased-MF peer on the fold's training rows (as fastai_cf's vocab rows); RMSE/MAE (clipped) and ranking"
    u,i,r = cols
    dls = CFDataLoaders.from_df(df, splits=fold, user_name=u, item_name=i, rating_name=r)
    nu,ni = len(dls.classes[u]),len(dls.classes[i])
    m = fit(dls.train.x.cpu().long(), dls.train.y.cpu().view(-1), nu, ni, seed)
    vx,vy = dls.valid.x.cpu().long(),dls.valid.y.cpu().view(-1).double().numpy()
    p = np.clip(m.predict(vx), *scale)
    rank = ranking_metrics(m.scorer(), dls.train.x, dls.valid.x, dls.valid.y.view(-1), k=K, n_items=ni, bs=1<<20)
    return pd.concat([pd.Series({'rmse': float(np.sqrt(((p-vy)**2).mean())), 'mae': float(np.abs(p-vy).mean())}),
                      rank, pd.Series({'fit_s': m.fit_s})])

# ---------------------------------------------------------------- the table

def run(df, cols, folds, models, seed, done=None):
    "Per-fold metrics of every model on `folds`: {name: DataFrame}; `done(name, frame)` after each model"
    res = {}
    for name,spec in models.items():
        start = time.perf_counter()
        scale = (df[cols[2]].min(), df[cols[2]].max())
        if callable(spec):     # a Surprise model
            res[name] = pd.DataFrame([surprise_fold(spec, df, cols, f, scale) for f in folds])
        elif isinstance(spec, tuple):    # cornac, LensKit
            res[name] = pd.DataFrame([biasmf_fold(spec[1], df, cols, f, scale, seed) for f in folds])
        else: res[name] = cross_validate(df, folds=folds, seed=seed, k=K, **spec).drop(index='mean')
        m = res[name].mean()
        print(f"  {name:<42} RMSE {m['rmse']:.4f}  NDCG@{K} {m[f'ndcg@{K}']:.4f}  ({time.perf_counter()-start:.0f} s)", flush=True)
        if done: done(name, res[name])
    return res

def table(res):
    rows = []
    for name,r in res.items():
        m,sd = r.mean(),r.std(ddof=1) if len(r) > 1 else r.mean()*np.nan
        rows.append({'model': name, 'RMSE': m['rmse'], '±sd': sd['rmse'], 'MAE': m['mae'], f'NDCG@{K}': m[f'ndcg@{K}'],
                     f'P@{K}': m[f'precision@{K}'], f'R@{K}': m[f'recall@{K}'], f'cov@{K}': m[f'coverage@{K}'], 'fit s': m['fit_s']})
    return pd.DataFrame(rows).set_index('model')

def report(title, res):
    t = table(res)
    print(f"\n## {title}\n")
    print(t.to_string(float_format=lambda v: f'{v:.4f}' if abs(v) < 10 else f'{v:.1f}'))
    d,s = 'fastai_cf default','fastai collab_learner (stock)'
    if d in t.index:
        best = t['RMSE'].idxmin()
        print(f"\nlowest RMSE: {best} ({t.loc[best, 'RMSE']:.4f})" + ('' if best == d else f"; fastai_cf default {t.loc[d, 'RMSE']:.4f}"))
        if s in t.index: print(f"NDCG@{K}: fastai_cf default {t.loc[d, f'NDCG@{K}']:.4f} vs stock fastai {t.loc[s, f'NDCG@{K}']:.4f}")
    return t

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--folds', type=int, default=5, help='number of folds (ml-latest-small)')
    p.add_argument('--quick', action='store_true', help='1 fold; the fast models only, unless --models is given (smoke test)')
    p.add_argument('--models', default=None, help='comma-separated substrings of the model names to run')
    p.add_argument('--items', default='title', choices=['title', 'movieId'], help='item ids on ml-latest-small')
    p.add_argument('--ml100k', default=None, metavar='PATH', help='also run ml-100k from this local folder or zip')
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--threads', type=int, default=None, help='torch threads')
    p.add_argument('--csv', default=None, help='write every fold of every model to this CSV')
    p.add_argument('--lenskit-python', default=None, help="an interpreter with LensKit (default: .venv-bench's, when present)")
    p.add_argument('--skip-mls', action='store_true', help='leave out ml-latest-small (with --ml100k)')
    args = p.parse_args()
    global LENSKIT_PYTHON
    import os
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    LENSKIT_PYTHON = args.lenskit_python or next((o for o in [os.path.join(here, '.venv-bench', 'bin', 'python')] if os.path.exists(o)), None)
    flat_heap()
    if args.threads: torch.set_num_threads(args.threads)
    if surprise is None: print("scikit-surprise is not installed: its rows are left out (pip install scikit-surprise)")
    sets = ([] if args.skip_mls and args.ml100k else [('ml-latest-small', None, args.items)]) + ([('ml-100k', args.ml100k, 'movieId')] if args.ml100k else [])
    out = []
    for name,path,items in sets:
        df = load_movielens(name, titles=(items == 'title'), path=path)
        cols = ('userId', items, 'rating')
        if name == 'ml-100k':
            try: folds,how = ml100k_folds(path, df=df),"ml-100k's u1..u5 files"
            except FileNotFoundError: folds,how = cv_folds(df, 5, args.seed),f"cv_folds(5, seed={args.seed}) (no u1..u5 files)"
        else: folds,how = cv_folds(df, args.folds, args.seed),f"cv_folds({args.folds}, seed={args.seed})"
        models = {**fastai_models(cols), **surprise_models(args.seed), **other_models()}
        if args.quick:
            folds = folds[:1]
            if not args.models: models = {n: m for n,m in models.items() if n in ('fastai_cf default', 'Surprise BaselineOnly', 'Surprise SVD', 'cornac MF')}
        if args.models: models = {n: m for n,m in models.items() if any(s.strip().lower() in n.lower() for s in args.models.split(','))}
        title = (f"{name}: {len(df):,} ratings, {df.userId.nunique():,} users, {df[items].nunique():,} items ({items}); "
                 f"{len(folds)} fold{'s' if len(folds) > 1 else ''}: {how}")
        print(f"# {title}", flush=True)
        def done(n, r):    # keep every finished model on disk: a full run takes a while
            out.append(r.assign(data=name, model=n, fold=range(len(r))))
            if args.csv: pd.concat(out).to_csv(args.csv, index=False)
        report(title, run(df, cols, folds, models, args.seed, done))

if __name__ == '__main__': main()
