"""25M ratings on 2 cores: fastai_cf's default training path vs the same with the optimizer on PyTorch's ops, and stock fastai, side by side.

A synthetic MovieLens-25M-shaped set (25M ratings, 162k users, 59k items, long-tailed popularity, planted
low-rank signal + noise) is built with `synth_ratings`. For each library: time to build the DataLoaders, seconds
per training epoch, validation MSE after one epoch vs predicting the global mean, and peak RSS. Stock fastai is
far too slow for a whole epoch, so it is timed on a bounded number of batches and extrapolated (the output says so).
The epoch (one `fit_one_cycle(1)`, validation included) is also given in CPU seconds, which other processes on a
shared machine disturb less than the wall time, and broken down: where the training batches' time goes (the
loader, the model's forward pass, the loss, the backward pass, the optimizer step, fastai's callbacks) and the
validation, timed by two bench-only callbacks that stamp each batch event first and last. The second column is the
default learner with `LazyAdam(fused=False)`: every table stepped by PyTorch's ops, as before the compiled step
(`--skip-unfused` leaves it out).
"""
import gc, os, resource, time, warnings
from collections import defaultdict
import torch
from fastcore.script import call_parse
from fastai.callback.core import Callback
from fastai.collab import CollabDataLoaders, collab_learner
from fastai.callback.training import ShortEpochCallback
from fastai_cf.data import synth_ratings, CFDataLoaders
from fastai_cf.learner import cf_learner, TorchThreads
from fastai_cf.optimizer import LazyAdam
from functools import partial

def _rss_gb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # Linux: KiB

_EVENTS = ('before_batch', 'after_pred', 'after_loss', 'before_backward', 'after_backward', 'before_step', 'after_step', 'after_batch')

class _Stamp(Callback):
    "Note the time of each training batch event, first (`first=True`) or last of all callbacks"
    def __init__(self, clock, first): self.clock,self.tag,self.order = clock,'A' if first else 'Z',(-10_000 if first else 10_000)
for _e in _EVENTS: setattr(_Stamp, _e, (lambda e: lambda self: self.training and self.clock.t.__setitem__(self.tag+e, time.perf_counter()))(_e))

class _Clock(Callback):
    "Add up, per training batch, the time between the stamps: what each part of the loop and the callbacks cost"
    order = 10_001
    def __init__(self): self.t,self.acc,self.last,self.nb = {},defaultdict(float),None,0
    @property
    def cbs(self): return [_Stamp(self, True), _Stamp(self, False), self]
    def before_train(self): self.last = None
    def after_batch(self):
        if not self.training: return
        t,a,now = self.t,self.acc,time.perf_counter()
        if self.last is not None: a['loader'] += t['Abefore_batch'] - self.last
        a['forward'] += t['Aafter_pred'] - t['Zbefore_batch']
        a['loss'] += t['Aafter_loss'] - t['Zafter_pred']
        a['backward'] += t['Aafter_backward'] - t['Zbefore_backward']
        a['optimizer step'] += t['Aafter_step'] - t['Zbefore_step']
        a['zero_grad'] += t['Aafter_batch'] - t['Zafter_step']
        a['callbacks'] += sum(t['Z'+e] - t['A'+e] for e in _EVENTS) + (now - t['Zafter_batch'])
        self.last,self.nb = now,self.nb + 1
    def before_validate(self): self.tv = time.perf_counter()
    def after_validate(self): self.acc['validation'] += time.perf_counter() - self.tv

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
         threads:int=None, # PyTorch threads for fastai_cf's fit (default: `cf_learner`'s, one on the CPU)
         bs:int=None, # fastai_cf's batch size (default: `default_bs`)
         skip_unfused:bool=False, # Skip the run of `LazyAdam(fused=False)`: the step on PyTorch's ops, as before the compiled step
        ):
    warnings.filterwarnings('ignore')
    torch.manual_seed(0)
    t = time.perf_counter()
    df = synth_ratings(n_users, n_items, n_ratings, rank=8, seed=0)
    print(f"synthetic set: {len(df):,} ratings, {df.userId.nunique():,} users, {df.movieId.nunique():,} items, "
          f"built in {time.perf_counter()-t:.1f} s (peak RSS so far {_rss_gb():.2f} GB)\n")

    t = time.perf_counter()
    dls = CFDataLoaders.from_df(df, seed=42, device='cpu', bs=bs)
    build = time.perf_counter() - t
    print(f"fastai_cf DataLoaders built in {build:.1f} s (peak RSS so far {_rss_gb():.2f} GB)", flush=True)
    def _ours(fused=None):
        "One epoch of the default learner (`fused=False`: `LazyAdam` on PyTorch's ops only), timed and broken down"
        torch.manual_seed(0)    # both columns start from the same weights and draw the same batches
        learn,clock = cf_learner(dls, **({} if fused is None else dict(opt_func=partial(LazyAdam, fused=fused)))),_Clock()
        with learn.no_bar(), learn.no_logging():
            t,r = time.perf_counter(),resource.getrusage(resource.RUSAGE_SELF)
            learn.fit_one_cycle(1, cbs=clock.cbs + ([TorchThreads(threads)] if threads else []))
            epoch,r2 = time.perf_counter() - t,resource.getrusage(resource.RUSAGE_SELF)
        user,sys_,faults = r2.ru_utime - r.ru_utime,r2.ru_stime - r.ru_stime,r2.ru_minflt - r.ru_minflt
        res = dict(build=build, epoch=epoch, cpu=user+sys_, user=user, sys=sys_, faults=faults, mse=float(learn.recorder.values[-1][1]),
                   base=_mse_mean(dls), rss=_rss_gb(), bs=learn.dls.train.bs, n=len(learn.dls.train))
        print(f"\nfastai_cf {'default' if fused is None else f'fused={fused}'}: bs={res['bs']}, {res['n']} batches/epoch, "
              f"n_factors={learn.model.n_factors}" + (f", {threads} threads" if threads else ''))
        print(f"where the epoch's {epoch:.1f} s go (training: per batch over {clock.nb} batches):")
        for k,v in clock.acc.items(): print(f"  {k:<16}{v:7.1f} s" + (f"{v/clock.nb*1e3:8.2f} ms/batch" if k != 'validation' and clock.nb else ''))
        print(f"  {'the rest':<16}{epoch - sum(clock.acc.values()):7.1f} s   (fit set-up, the epoch's shuffle before its first batch, LazyDecay's settling)")
        return res
    ours = _ours()
    torch_ops = None if skip_unfused else _ours(fused=False)
    del dls; gc.collect()

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

    def _col(r):
        if r is None: return ['-']*8
        return [f"{r['build']:.1f}", f"{r['epoch']:.1f}", f"{r['cpu']:.1f}", f"{r['user']:.1f} / {r['sys']:.1f}", f"{r['faults']:,}",
                f"{r['mse']:.4f}", f"{r['base']:.4f}", f"{r['rss']:.2f}"]
    names = ['build DataLoaders (s)', 'seconds per training epoch', 'CPU seconds of that epoch', '  of which user / system',
             '  page faults (minor)', 'valid MSE after 1 epoch', 'valid MSE of the global mean', 'peak RSS so far (GB)']
    sc = ['-']*8
    if stock: sc[0],sc[1],sc[7] = f"{stock['build']:.1f}",f"~{stock['epoch']:,.0f} (extrapolated)",f"{stock['rss']:.2f}"
    print(f"\n{'':<32}{'fastai_cf default':>20}{'fused=False':>16}{'stock fastai':>24}   (load average {' '.join(f'{v:.2f}' for v in os.getloadavg())})")
    for name,a,b,c in zip(names, _col(ours), _col(torch_ops), sc): print(f"{name:<32}{a:>20}{b:>16}{c:>24}")
    if torch_ops: print(f"\nthe compiled step (default) vs PyTorch's ops (fused=False): epoch {torch_ops['epoch']/ours['epoch']:.2f}x faster")
    if stock:
        print(f"\nstock fastai: timed {stock_batches} batches of bs={stock_bs} ({stock['n']:,} per epoch) and extrapolated; "
              f"epoch speed-up {stock['epoch']/ours['epoch']:.0f}x, build {stock['build']/ours['build']:.1f}x")
