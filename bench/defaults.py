"""The fast path's defaults on synthetic ratings of every size, scale, density and skew, beside Surprise.

For each set: a random 80/20 split (`cf_splits(seed=42)`); `cf_learner(dls).fit_one_cycle(5)` on loaders built
without `bs=` (the default path); the same learner without the implicit-feedback term ('no implicit', `implicit=False`:
the default before it), and also with its biases started at zero as before issue 18 ('zero start');
Surprise's `BaselineOnly` (global mean + regularised biases) and `SVD` with their defaults on the same rows. Prints a
markdown table (validation RMSE, fit seconds) and whether the default beats SVD and is no worse than the baseline.

The sets come from `synth_ratings` (planted low-rank signal, biases, long-tailed popularity; users get half the
items' Zipf exponent) and, for the very sparse ones, from `skewed_ratings` below (the same model with its own exponent
per side, so the median user *and* item can have one rating). Scales other than 0.5-5 are the 0.5-5 ratings mapped
linearly and rounded to the scale's step.

    python bench/defaults.py                 # every set (about 10 minutes on 2 busy cores)
    python bench/defaults.py --max-rows 400000 --sets sparse,cold
"""
import argparse, math, time, warnings
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from fastai.torch_core import set_seed
from fastai_cf.data import CFDataLoaders, synth_ratings, cf_splits
from fastai_cf.learner import cf_learner

def skewed_ratings(n_users, n_items, n_ratings, alpha_u=1.0, alpha_i=1.0, rank=4, noise=0.9, mu=4.0, step=1.0,
                   bias_sd=(0.5, 0.6), seed=0):
    "Ratings as `synth_ratings`'s model, Zipf exponent `alpha_u` for users and `alpha_i` for items, rounded to `step` in [step, 5]"
    rng = np.random.default_rng(seed)
    def draw(n, a, k):
        p = 1/np.arange(1, n+1)**a; p /= p.sum()
        return rng.permutation(n)[np.minimum(np.searchsorted(np.cumsum(p), rng.random(k)), n-1)]
    u,i = draw(n_users, alpha_u, n_ratings),draw(n_items, alpha_i, n_ratings)
    U,I = (rng.standard_normal((n, rank)) / rank**0.25 for n in (n_users, n_items))
    ub,ib = rng.normal(0, bias_sd[0], n_users),rng.normal(0, bias_sd[1], n_items)
    r = mu + ub[u] + ib[i] + (U[u]*I[i]).sum(1) + noise*rng.standard_normal(n_ratings)
    return pd.DataFrame({'userId': u, 'movieId': i, 'rating': np.clip(np.round(r/step)*step, step, 5).astype(np.float32)})

def rescale(df, lo, hi, step):
    "0.5-5 ratings mapped linearly onto [lo, hi], rounded to `step`"
    r = lo + (df.rating - 0.5) * (hi - lo) / 4.5
    return df.assign(rating=(np.round((r - lo)/step)*step + lo).clip(lo, hi).astype(np.float32))

SETS = {   # name -> (description, builder)
    'small':   ('20k, 1-5 half stars', lambda: synth_ratings(1000, 500, 20_000, seed=1)),
    'scale4':  ('35k, 0.5-4, 1.5k x 2k', lambda: rescale(synth_ratings(1500, 2000, 35_000, noise=0.8, alpha=1.0, seed=2), 0.5, 4, 0.5)),
    'sparse':  ('73k, 1-5, median user/item 1', lambda: skewed_ratings(50_000, 50_000, 73_000, 0.97, 1.0, seed=1)),
    'cold':    ('73k, 1-5, most valid rows unseen', lambda: skewed_ratings(100_000, 100_000, 73_000, 0.8, 0.8, seed=1)),
    'dense':   ('200k, 40% dense, low noise', lambda: synth_ratings(1000, 500, 200_000, noise=0.3, alpha=0.3, seed=4)),
    'scale10': ('300k, 1-10 whole', lambda: rescale(synth_ratings(5000, 3000, 300_000, noise=0.7, alpha=0.8, seed=3), 1, 10, 1)),
    'skew':    ('1M, alpha 1.4, noisy', lambda: synth_ratings(50_000, 20_000, 1_000_000, noise=1.0, alpha=1.4, seed=5)),
    'large':   ('2M, 1-5 half stars', lambda: synth_ratings(100_000, 20_000, 2_000_000, seed=6)),
}

def surprise_rmse(df, tr, va, algo):
    from surprise import Dataset, Reader, accuracy
    cols = ['userId', 'movieId', 'rating']
    ts = Dataset.load_from_df(df.iloc[tr][cols], Reader(rating_scale=(df.rating.min(), df.rating.max()))).build_full_trainset()
    start = time.perf_counter()
    algo.fit(ts)
    fit_s = time.perf_counter() - start
    return accuracy.rmse(algo.test(list(df.iloc[va][cols].itertuples(index=False, name=None))), verbose=False),fit_s

def ours(df, tr, va, zero_start=False, **kwargs):
    dls = CFDataLoaders.from_df(df, splits=(tr, va), user_name='userId', item_name='movieId', rating_name='rating')
    set_seed(42)
    learn = cf_learner(dls, **kwargs)
    if zero_start:     # the biases as fastai's `Embedding` starts them, as before issue 18
        for b in (learn.model.u_bias, learn.model.i_bias): b.weight.data.normal_(0, 0.01)
    start = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(5)
    fit_s = time.perf_counter() - start
    with learn.no_bar(): mse = learn.validate()[0]
    return math.sqrt(mse),fit_s,dls

def markdown(t):
    "`t` as a markdown table (floats to 4 places, seconds to 1)"
    f = lambda c,v: (f'{v:.1f}' if c.endswith(' s') else f'{v:.4f}') if isinstance(v, float) else (f'{v:,}' if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) else str(v))
    lines = ['| ' + ' | '.join(t.columns) + ' |', '|' + '---|'*len(t.columns)]
    return '\n'.join(lines + ['| ' + ' | '.join(f(c, v) for c,v in zip(t.columns, r)) + ' |' for r in t.itertuples(index=False)])

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sets', default=None, help=f"comma-separated names from {', '.join(SETS)}")
    p.add_argument('--max-rows', type=int, default=None, help='leave out sets larger than this')
    args = p.parse_args()
    from surprise import BaselineOnly, SVD
    rows = []
    for name,(desc,build) in SETS.items():
        if args.sets and name not in args.sets.split(','): continue
        df = build()
        if args.max_rows and len(df) > args.max_rows: continue
        tr,va = cf_splits(df, 'random', 0.2, 42)
        base,_ = surprise_rmse(df, tr, va, BaselineOnly(verbose=False))
        svd,svd_s = surprise_rmse(df, tr, va, SVD(random_state=42))
        r,s,dls = ours(df, tr, va)
        z,_,_ = ours(df, tr, va, zero_start=True, implicit=False)
        ni,ni_s,_ = ours(df, tr, va, implicit=False)
        cu,ci = df.userId.value_counts(),df.movieId.value_counts()
        rows.append({'set': name, 'what': desc, 'ratings': len(df), 'users': len(cu), 'items': len(ci),
                     'scale': f"{df.rating.min():g}-{df.rating.max():g}", 'median u/i': f"{cu.median():g}/{ci.median():g}",
                     'valid unseen': f"{dls.n_valid_unseen/len(va):.0%}", 'BaselineOnly': base, 'SVD': svd,
                     'zero start': z, 'no implicit': ni, 'default': r, 'default s': s, 'no implicit s': ni_s, 'SVD s': svd_s,
                     'beats SVD': r < svd, '<= baseline': r <= base})
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1, float_format=lambda v: f'{v:.4f}'), flush=True)
    t = pd.DataFrame(rows)
    print('\n' + markdown(t))
    print(f"\ndefault beats SVD on {t['beats SVD'].sum()}/{len(t)}, no worse than BaselineOnly on {t['<= baseline'].sum()}/{len(t)}")

if __name__ == '__main__': main()
