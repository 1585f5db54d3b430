"""Folding in new users (`Learner.fold_in`) against retraining with them, and against the average-user fallback.

ml-latest-small ratings merged with titles (users `userId`, items `title`). 60 users are held out entirely (seeded).
The default recipe, `cf_learner(CFDataLoaders.from_df(rest, seed=42)).fit_one_cycle(5)`, trains on the other users.
Each held-out user's ratings are split at random 80/20: `fold_in` gets the 80%, and the 20% are predicted by

- fold-in: the base model after `learn.fold_in(the 80% rows)`;
- fallback: the base model's average user (`predict_ratings(unknown='fallback')`), what new users got before;
- retrain: the same recipe and seed trained on the base model's training rows plus the 80% rows (its validation rows
  are the base model's, so the two models differ only by the held-out users' rows).

It prints RMSE on the 20% rows, NDCG@10 (and recall@10) of each user's top 10 among the items they have not rated
(relevant: a held-out rating >= 4), among all items and among those with at least 10 training ratings (what
`recommend` ranks by default), the fold-in variants measured to choose the defaults (`FOLD_IN_REG`, Gauss-Newton
`steps`, and the closed form on the logit), the stock path (`fast=False`), and the speed: one user with 20 ratings
(median of 50 calls), and 1,000 users of 20 ratings in one call (median of 3), on one PyTorch thread.

    python bench/foldin.py               # 3-6 minutes on 2 cores (two recipes, each trained twice)
    python bench/foldin.py --seed 1      # another draw of held-out users (and 80/20 splits)
    python bench/foldin.py --no-stock    # the fast path only
"""
import copy, os, time, warnings
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from fastcore.script import call_parse
from fastai.torch_core import set_seed
from fastai_cf.data import CFDataLoaders, load_movielens, cf_splits
from fastai_cf.learner import cf_learner
from fastai_cf.metrics import ranking_metrics, _scorer
import fastai_cf.inference as inf

U,I,R = 'userId','title','rating'

def split_users(df, n_users, seed):
    "`(rest, fold, test)`: the ratings of all but `n_users` users, and an 80/20 split of each held-out user's ratings"
    rng = np.random.default_rng(seed)
    held = rng.choice(np.sort(df[U].unique()), n_users, replace=False)
    rest = df[~df[U].isin(held)].reset_index(drop=True)
    fold,test = [],[]
    for _,g in df[df[U].isin(held)].groupby(U):
        idx = rng.permutation(g.index.to_numpy())
        k = int(round(0.8*len(idx)))
        fold.append(idx[:k]); test.append(idx[k:])
    return rest,df.loc[np.concatenate(fold)].reset_index(drop=True),df.loc[np.concatenate(test)].reset_index(drop=True)

def train(df, splits=None, fast=True):
    set_seed(42, reproducible=True)
    dls = CFDataLoaders.from_df(df, user_name=U, item_name=I, rating_name=R, seed=42, splits=splits)
    learn = cf_learner(dls, fast=fast)
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(5)
    return learn,time.perf_counter() - t

def rmse(p, y): return float(np.sqrt(np.mean((np.asarray(p, np.float64) - y)**2)))

def ranking(learn, fold, test, fallback=False, min_ratings=1):
    "NDCG@10 and recall@10 of the held-out users' top 10 among the items with `min_ratings` training ratings that they have not rated"
    _,_,uv,iv = inf._vocabs(learn)
    users = np.sort(test[U].unique())
    loc = {u: k for k,u in enumerate(users)}
    enc = lambda d: np.stack([d[U].map(loc).to_numpy(), inf._encode(d[I], iv)], 1)
    tp,vp = enc(fold),enc(test)
    ok = vp[:,1] > 0       # items this model has a row for
    ku,ki = inf._known(learn)
    rare = np.flatnonzero(~inf._rated_enough(learn, np.ones(len(iv), bool), min_ratings))   # as `recommend(min_ratings=)` leaves out
    tp = np.concatenate([tp, np.stack(np.meshgrid(np.arange(len(users)), rare), -1).reshape(-1, 2)])
    rows = torch.tensor([0 if fallback else uv.o2i[u] for u in users])
    score = _scorer(learn.model, len(iv))
    def scores(us):
        with inf._average_row0(learn.model, (ku, ki)) if fallback else inf.nullcontext(): return score(rows[us])
    m = ranking_metrics(scores, torch.from_numpy(tp), torch.from_numpy(vp[ok]), test[R].to_numpy()[ok], k=10, n_items=len(iv))
    return m['ndcg@10'],m['recall@10']

def logit_solve(X, b, r, mask, y_range, rc, decayed, w0, steps=5):
    "The closed form on the logit: least squares of `logit(r)` (weighted by the slope there), the penalty re-derived `steps` times"
    lo,hi = y_range
    t = torch.logit(((r - lo)/(hi - lo)).clamp(1e-3, 1 - 1e-3))
    sg = torch.sigmoid(t)
    wt = (hi - lo)*sg*(1 - sg)*mask
    cnt,w = mask.sum(1),w0.expand(X.shape[0], -1).clone()
    J = X*wt[...,None]
    for _ in range(steps):
        e = wt*(t - b - (X @ w[:,:,None])[...,0])
        lam = inf._ridge_penalty(J*e[...,None], cnt, rc, decayed)
        w = torch.linalg.solve(J.transpose(1, 2) @ J + torch.diag_embed(lam), (J*(wt*(t - b))[...,None]).sum(1) + lam*w0)
    return w

def clone(base):
    "A copy of `base` that folds in as `base` would (a copy loses the `Recorder`'s learning rates, so it takes `base`'s recipe)"
    learn = copy.deepcopy(base)
    learn.cf_recipe,learn.opt = inf._train_recipe(base),None
    return learn

def folded(base, fold, **kw):
    "A copy of `base` with the users of `fold` folded in, and the seconds `fold_in` took"
    learn = clone(base)
    t = time.perf_counter()
    learn.fold_in(fold, **kw)
    return learn,time.perf_counter() - t

def fake_users(fold, n, n_ratings, seed, prefix):
    "`n` users of `n_ratings` ratings drawn from the held-out rows"
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(len(fold), n_ratings, replace=False) for _ in range(n)])
    f = fold.iloc[idx].copy()
    f[U] = np.repeat([f'{prefix}{k}' for k in range(n)], n_ratings)
    return f.drop_duplicates([U, I])

@call_parse
def main(seed:int=0, # Seed of the held-out users and their 80/20 splits
         n_users:int=60, # Users held out
         no_stock:bool=False, # Skip the stock (`fast=False`) comparison
        ):
    torch.set_num_threads(1)
    df = load_movielens()
    rest,fold,test = split_users(df, n_users, seed)
    y = test[R].to_numpy()
    print(f"ml-latest-small: {len(rest):,} ratings of {rest[U].nunique()} users train the base model; {n_users} users held out, "
          f"{len(fold):,} of their ratings folded in, {len(test):,} predicted (seed {seed})\n")
    tr,va = cf_splits(rest, 'random', 0.2, 42)
    both = pd.concat([rest, fold], ignore_index=True)
    splits = (np.concatenate([tr, len(rest) + np.arange(len(fold))]), va)
    res = {}
    for fast in ((True,) if no_stock else (True, False)):
        base,t_base = train(rest, fast=fast)
        rc = inf._train_recipe(base)
        full,t_full = train(both, splits, fast=fast)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            p_fb = base.predict_ratings(test[[U, I]], unknown='fallback')
        fl,t_fold = folded(base, fold)
        path = 'fast path (LazyAdam)' if fast else 'stock fastai (fast=False)'
        print(f"== {path}: wd {rc['wd']:.4g}, {rc['batches']} batches of {rc['bs']} per epoch, {rc['epochs']} epochs, "
              f"learning rates summing to {rc['lr_sum']:.3g} (wd x that: {rc['wd']*rc['lr_sum']:.2f}); "
              f"base fit {t_base:.1f} s, retrain {t_full:.1f} s, fold-in {t_fold*1000:.0f} ms")
        rows = {'fold-in': (fl, False), 'fallback (average user)': (base, True), 'retrain with the 80%': (full, False)}
        preds = {'fold-in': fl.predict_ratings(test[[U, I]], unknown='fallback'), 'fallback (average user)': p_fb,
                 'retrain with the 80%': full.predict_ratings(test[[U, I]], unknown='fallback')}
        r_full = rmse(preds['retrain with the 80%'], y)
        print(f"{'':26}{'RMSE':>8}{'vs retrain':>12}{'NDCG@10':>10}{'recall@10':>11}   among items with >= 10 ratings: {'NDCG@10':>8}{'recall@10':>11}")
        for k,(l,fb) in rows.items():
            r = rmse(preds[k], y)
            nd,rc10 = ranking(l, fold, test, fallback=fb)
            nd10,rc1010 = ranking(l, fold, test, fallback=fb, min_ratings=10)
            print(f"{k:26}{r:8.4f}{r/r_full - 1:+12.1%}{nd:10.4f}{rc10:11.4f}   {'':32}{nd10:8.4f}{rc1010:11.4f}")
            res[(fast, k)] = r,nd
        print("\nfold-in variants (RMSE, vs retrain):")
        old = inf.FOLD_IN_REG
        try:
            for reg in (0.25, 0.5, 0.7, 1.0, 1.5):
                inf.FOLD_IN_REG = reg
                line = [f"{rmse(folded(base, fold, steps=s)[0].predict_ratings(test[[U, I]], unknown='fallback'), y):.4f}" for s in (1, 2, 5)]
                solve = inf._fold_solve
                inf._fold_solve = logit_solve
                try: lg = rmse(folded(base, fold)[0].predict_ratings(test[[U, I]], unknown='fallback'), y)
                finally: inf._fold_solve = solve
                print(f"  FOLD_IN_REG={reg:<4}  Gauss-Newton steps 1/2/5: {' / '.join(line)}   closed form on the logit: {lg:.4f}"
                      f"   (retrain {r_full:.4f})")
        finally: inf.FOLD_IN_REG = old
        old = inf._EARLY_STOP
        try:
            line = []
            for c in (0., 0.25, 0.5, 1.):
                inf._EARLY_STOP = c
                line.append(f"{c:g}: {rmse(folded(base, fold)[0].predict_ratings(test[[U, I]], unknown='fallback'), y):.4f}")
            print(f"  early-stopping term (x 1/sum(lr)), FOLD_IN_REG={inf.FOLD_IN_REG:g}, 3 steps:  {'   '.join(line)}")
        finally: inf._EARLY_STOP = old
        if fast:
            one = [fake_users(fold, 1, 20, k, f'one{k}_') for k in range(50)]
            l1 = clone(base)
            ts,cs = [],[]
            for f in one:
                t,c = time.perf_counter(),time.process_time(); l1.fold_in(f)
                ts.append(time.perf_counter() - t); cs.append(time.process_time() - c)
            many = fake_users(fold, 1000, 20, 1, 'many')
            tm = [folded(base, many)[1] for _ in range(3)]
            print(f"\nspeed: one user with 20 ratings {np.median(ts)*1000:.1f} ms wall, {np.median(cs)*1000:.1f} ms CPU (median of 50; "
                  f"target <= 10 ms); 1,000 users with 20 ratings each in one call {np.median(tm)*1000:.0f} ms (median of 3; target <= 1000 ms)")
        print()
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores; torch threads {torch.get_num_threads()}")
