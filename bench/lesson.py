"""The lesson protocol, side by side: the lesson's three experiments through fastai_cf, then stock fastai vs the
fastai_cf default (vs scikit-surprise's SVD when installed), in one process.

ml-latest-small ratings merged with titles; users `userId`, items `title`, target `rating`; fastai's 80/20
`RandomSplitter` with seed 42 (the same validation rows for every row of every table).

Part 1 (the lesson, issue "models"): DotProduct, DotProductBias, DotProductBias wd=0.1, each through
`CFDataLoaders` + the package's models with stock fastai training (`fast=False`: dense embeddings, fastai's Adam),
bs 64, n_factors 50, y_range (0, 5.5), `fit_one_cycle(5, 5e-3)`: per-epoch tables as the lesson prints them, then
the final figures beside stock fastai 2.8.12's (DESIGN.md).

Part 2 (performance): stock fastai exactly as the lesson (`CollabDataLoaders` + `collab_learner`, bs 64,
`fit_one_cycle(5, 5e-3, wd=0.1)`) vs `cf_learner(CFDataLoaders.from_movielens(seed=42)).fit_one_cycle(5)` (no
hyper-parameter given) vs Surprise SVD (50 factors, reg 0.05, lr 0.007, 40 epochs) fitted on the same training
rows: fit seconds, seconds per epoch, final validation MSE / RMSE and the speed ratios.

    python bench/lesson.py              # about 3 minutes on 2 cores
    python bench/lesson.py --part 2     # the performance comparison only
    python bench/lesson.py --quick      # 1 epoch each, a smoke test
"""
import time, warnings
warnings.filterwarnings('ignore')   # torch's `jit.script` notice while fastai imports; the 4 repeated (user, title) pairs
import numpy as np, torch
from fastcore.script import call_parse
from fastai.torch_core import set_seed
from fastai.collab import CollabDataLoaders, collab_learner
from fastai_cf.data import CFDataLoaders, load_movielens
from fastai_cf.learner import cf_learner

# Stock fastai 2.8.12 on this protocol, bs=64 (valid MSE after 5 epochs, fit seconds), from DESIGN.md
STOCK = {'DotProduct': (0.869, 73), 'DotProductBias': (0.815, 98), 'DotProductBias, wd=0.1': (0.758, 70)}
EXPERIMENTS = [('DotProduct', 'dot', 0.), ('DotProductBias', 'dot_bias', 0.), ('DotProductBias, wd=0.1', 'dot_bias', 0.1)]
COLS = ['epoch', 'train_loss', 'valid_loss', 'time']

def _row(vals):
    "One line of a table in the layout of fastai's console logger"
    print('  '.join(f'{v:<10.6f}' if isinstance(v, float) else f'{str(v):<10}' for v in vals), flush=True)

def _fit(learn, *args, **kwargs):
    "Fit quietly; (per-epoch valid losses, fit seconds)"
    start = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(*args, **kwargs)
    return [float(v[1]) for v in learn.recorder.values], time.perf_counter() - start

def lesson(df, epochs):
    dls = CFDataLoaders.from_df(df, user_name='userId', item_name='title', rating_name='rating', seed=42, bs=64)
    print(f"# Part 1: the lesson's experiments through fastai_cf (stock training: fast=False)\n"
          f"fit_one_cycle({epochs}, 5e-3), n_factors=50, y_range=(0, 5.5), bs=64, seed=42\n")
    res = {}
    for name, model, wd in EXPERIMENTS:
        print(f"## {name}")
        set_seed(42, reproducible=True)
        learn = cf_learner(dls, model, n_factors=50, y_range=(0, 5.5), metrics=[], wd=wd, fast=False)
        learn.logger = _row
        _row(COLS)
        start = time.perf_counter()
        with learn.no_bar(): learn.fit_one_cycle(epochs, 5e-3)
        res[name] = [float(v[1]) for v in learn.recorder.values], time.perf_counter() - start
        print()
    print(f"## Summary (valid MSE after {epochs} epoch{'s' if epochs > 1 else ''}; stock fastai after 5)")
    print(f"{'model':<24}{'valid MSE':>10}{'RMSE':>8}{'best (epoch)':>15}{'fit s':>8}{'fastai MSE':>12}{'Δ MSE':>8}{'fastai s':>10}")
    for name, (mses, secs) in res.items():
        best = min(range(len(mses)), key=mses.__getitem__)
        f_mse, f_secs = STOCK[name]
        print(f"{name:<24}{mses[-1]:>10.3f}{mses[-1]**0.5:>8.3f}{f'{mses[best]:.3f} ({best})':>15}{secs:>8.1f}"
              f"{f_mse:>12.3f}{mses[-1]-f_mse:>+8.3f}{f_secs:>10}")
    print()

def _surprise(dls, epochs):
    "Surprise SVD (tuned as in DESIGN.md) on `dls`' training rows, scored on its validation rows"
    try: from surprise import SVD, Dataset, Reader
    except ImportError: return None
    dec = lambda dl: dl.decode_frame(max_n=None)
    tr,va = dec(dls.train), dec(dls.valid)
    trainset = Dataset.load_from_df(tr[['userId','title','rating']], Reader(rating_scale=(0.5, 5))).build_full_trainset()
    algo = SVD(n_factors=50, reg_all=0.05, lr_all=0.007, n_epochs=40, random_state=42)
    start = time.perf_counter(); algo.fit(trainset); secs = time.perf_counter() - start
    preds = np.array([algo.predict(u, i).est for u,i in zip(va.userId, va.title)])
    return float(((preds - va.rating.to_numpy())**2).mean()), secs, 40

def performance(df, epochs):
    print(f"# Part 2: stock fastai vs the fastai_cf default{' vs Surprise SVD' if _has_surprise() else ''} "
          f"(same split; torch threads: {torch.get_num_threads()})\n")
    rows = []
    set_seed(42, reproducible=True)
    sdls = CollabDataLoaders.from_df(df, item_name='title', seed=42, bs=64)
    set_seed(42, reproducible=True)
    mses,secs = _fit(collab_learner(sdls, n_factors=50, y_range=(0, 5.5)), epochs, 5e-3, wd=0.1)
    rows.append(('stock fastai (lesson: bs 64, 5e-3, wd 0.1)', mses[-1], secs, epochs))
    dls = CFDataLoaders.from_movielens(seed=42)
    _fit(cf_learner(dls), 1)      # warm-up: the first fit in a process pays one-off costs (imports, allocator)
    set_seed(42, reproducible=True)
    learn = cf_learner(dls)
    mses,secs = _fit(learn, epochs)
    rows.append((f'fastai_cf default (bs {learn.dls.train.bs}, n_factors {learn.model.n_factors})', mses[-1], secs, epochs))
    s = _surprise(dls, epochs)
    if s: rows.append(('Surprise SVD (50 f, reg .05, lr .007)', s[0], s[1], s[2]))
    print(f"{'':<46}{'valid MSE':>10}{'RMSE':>8}{'fit s':>9}{'s/epoch':>9}")
    for name,mse,secs,ep in rows: print(f"{name:<46}{mse:>10.4f}{mse**0.5:>8.4f}{secs:>9.2f}{secs/ep:>9.3f}")
    ours = rows[1][2]
    print(f"\nfit time ratios: stock fastai / fastai_cf default = {rows[0][2]/ours:.0f}x"
          + (f"; Surprise SVD / fastai_cf default = {rows[2][2]/ours:.2f}x" if s else '')
          + f"\nvalid MSE: fastai_cf default {rows[1][1]:.4f} vs stock fastai {rows[0][1]:.4f}"
          + (f" vs Surprise SVD {rows[2][1]:.4f}" if s else '') + " (lower is better)")
    if s: print(f"(Surprise's fit excludes building its trainset; ours includes validating after each epoch.)")

def _has_surprise():
    try: import surprise; return True
    except ImportError: return False

@call_parse
def main(part:int=0, # 1: the lesson's experiments, 2: the performance comparison, 0: both
         quick:bool=False, # 1 epoch per run (a smoke test)
        ):
    epochs = 1 if quick else 5
    df = load_movielens()
    print(f"ml-latest-small: {len(df):,} ratings, {df.userId.nunique()} users, {df.title.nunique():,} titles\n")
    if part in (0, 1): lesson(df, epochs)
    if part in (0, 2): performance(df, epochs)
