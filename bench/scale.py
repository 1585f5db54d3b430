"""25M ratings on 2 cores: fastai_cf's default training path vs stock fastai, side by side.

A synthetic MovieLens-25M-shaped set (25M ratings, 162k users, 59k items, long-tailed popularity, planted
low-rank signal + noise) is built with `synth_ratings`. For each library: time to build the DataLoaders, seconds
per training epoch, validation MSE after one epoch vs predicting the global mean, and peak RSS. Stock fastai is
far too slow for a whole epoch, so it is timed on a bounded number of batches and extrapolated (the output says so).
The epoch (one `fit_one_cycle(1)`, validation included) is also given in CPU seconds, which other processes on a
shared machine disturb less than the wall time.
"""
import gc, os, resource, time, warnings
import torch
from fastcore.script import call_parse
from fastai.collab import CollabDataLoaders, collab_learner
from fastai.callback.training import ShortEpochCallback
from fastai_cf.data import synth_ratings, CFDataLoaders
from fastai_cf.learner import cf_learner

def _rss_gb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # Linux: KiB

def _mse_mean(dls):
    "Validation MSE of predicting the training mean"
    return float(((dls.valid.y - dls.train.y.mean())**2).mean())

@call_parse
def main(n_ratings:int=25_000_000, # Ratings in the synthetic set
         n_users:int=162_000, # Users
         n_items:int=59_000, # Items
         stock_batches:int=300, # Batches of stock fastai to time (then extrapolated to an epoch)
         stock_bs:int=64, # Stock fastai's batch size (the lesson's)
         skip_stock:bool=False, # Only measure fastai_cf
        ):
    warnings.filterwarnings('ignore')
    torch.manual_seed(0)
    t = time.perf_counter()
    df = synth_ratings(n_users, n_items, n_ratings, rank=8, seed=0)
    print(f"synthetic set: {len(df):,} ratings, {df.userId.nunique():,} users, {df.movieId.nunique():,} items, "
          f"built in {time.perf_counter()-t:.1f} s (peak RSS so far {_rss_gb():.2f} GB)\n")

    t = time.perf_counter()
    dls = CFDataLoaders.from_df(df, seed=42, device='cpu')
    build = time.perf_counter() - t
    print(f"fastai_cf DataLoaders built in {build:.1f} s (peak RSS so far {_rss_gb():.2f} GB)", flush=True)
    learn = cf_learner(dls)
    with learn.no_bar(), learn.no_logging():
        t,c = time.perf_counter(),time.process_time(); learn.fit_one_cycle(1); epoch,cpu = time.perf_counter() - t,time.process_time() - c
    mse = float(learn.recorder.values[-1][1])
    ours = dict(build=build, epoch=epoch, cpu=cpu, mse=mse, base=_mse_mean(dls), rss=_rss_gb(), bs=learn.dls.train.bs, n=len(learn.dls.train))
    print(f"fastai_cf default: bs={ours['bs']}, {ours['n']} batches/epoch, n_factors={learn.model.n_factors}")
    del learn, dls; gc.collect()

    stock = None
    if not skip_stock:
        t = time.perf_counter()
        sdls = CollabDataLoaders.from_df(df, seed=42, bs=stock_bs, device='cpu')
        sbuild = time.perf_counter() - t
        slearn = collab_learner(sdls, n_factors=50, y_range=(0, 5.5))
        pct = stock_batches / len(sdls.train)
        with slearn.no_bar(), slearn.no_logging():     # the real Learner loop, cut short after `stock_batches`
            t = time.perf_counter(); slearn.fit_one_cycle(1, 5e-3, wd=0.1, cbs=ShortEpochCallback(pct, short_valid=True))
        per_batch = (time.perf_counter() - t) / stock_batches
        stock = dict(build=sbuild, epoch=per_batch*len(sdls.train), rss=_rss_gb(), n=len(sdls.train))

    sb = f"{stock['build']:.1f}" if stock else '-'
    se = f"~{stock['epoch']:,.0f} (extrapolated)" if stock else '-'
    sr = f"{stock['rss']:.2f}" if stock else '-'
    rows = [('build DataLoaders (s)', f"{ours['build']:.1f}", sb),
            ('seconds per training epoch', f"{ours['epoch']:.1f}", se),
            ('CPU seconds of that epoch', f"{ours['cpu']:.1f}", '-'),
            ('valid MSE after 1 epoch', f"{ours['mse']:.4f}", '-'),
            ('valid MSE of the global mean', f"{ours['base']:.4f}", ''),
            ('peak RSS so far (GB)', f"{ours['rss']:.2f}", sr)]
    print(f"\n{'':<32}{'fastai_cf default':>20}{'stock fastai':>24}   (load average {' '.join(f'{v:.2f}' for v in os.getloadavg())})")
    for name,a,b in rows: print(f"{name:<32}{a:>20}{b:>24}")
    if stock:
        print(f"\nstock fastai: timed {stock_batches} batches of bs={stock_bs} ({stock['n']:,} per epoch) and extrapolated; "
              f"epoch speed-up {stock['epoch']/ours['epoch']:.0f}x, build {stock['build']/ours['build']:.1f}x")
