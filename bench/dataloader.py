"Build and iterate the lesson's DataLoaders: fastai's `CollabDataLoaders` vs `CFDataLoaders`, side by side."
import time, warnings
from fastcore.script import call_parse
from fastai.collab import CollabDataLoaders
from fastai_cf.data import load_movielens, CFDataLoaders

def _best(f, n):
    "Best wall time of `n` calls of `f`, and its last result"
    ts = []
    for _ in range(n):
        t = time.perf_counter(); res = f(); ts.append(time.perf_counter() - t)
    return min(ts), res

def _epoch(dls):
    n = 0
    for x,y in dls.train: n += len(y)
    return n

@call_parse
def main(bs:int=64, # Batch size (the lesson's is 64)
         repeats:int=3, # Best of this many runs for each figure
        ):
    warnings.filterwarnings('ignore')
    ratings = load_movielens()
    kw = dict(item_name='title', seed=42, bs=bs, device='cpu')
    rows = []
    for name,cls in (('fastai CollabDataLoaders', CollabDataLoaders), ('fastai_cf CFDataLoaders', CFDataLoaders)):
        build, dls = _best(lambda: cls.from_df(ratings, **kw), repeats)
        it, n = _best(lambda: _epoch(dls), repeats)
        rows.append((name, build, it, n, len(dls.train)))
    print(f"ml-latest-small, {len(ratings):,} ratings, bs={bs}, best of {repeats}\n")
    print(f"{'loaders':<26}{'build s':>10}{'epoch s':>10}{'rows':>9}{'batches':>9}")
    for name,b,i,n,nb in rows: print(f"{name:<26}{b:>10.3f}{i:>10.3f}{n:>9,}{nb:>9,}")
    (_,fb,fi,_,_),(_,cb,ci,_,_) = rows
    print(f"\nCFDataLoaders vs fastai: build {fb/cb:.1f}x faster, one training epoch {fi/ci:.0f}x faster")
