"Ranking metrics against a brute-force pure-Python reference, `evaluate` on real learners, folds, and bad arguments"
import math, warnings
import numpy as np, pandas as pd, pytest, torch
from fastai.collab import collab_learner
from fastai.torch_core import set_seed
from fastai_cf.data import CFDataLoaders
from fastai_cf.learner import cf_learner
from fastai_cf.inference import save_cf, load_cf
from fastai_cf.metrics import ranking_metrics, evaluate, cv_folds, ml100k_folds, cross_validate, relevance_threshold

# --- the reference: the definitions, one user and one item at a time ------------------------------------------------
def reference(S, train, valid, vy, k, threshold=4.0):
    "Every ranking metric at `k` from a list-of-lists score matrix, by the definitions (row/column 0 are '#na#')"
    n_users,n_items = len(S),len(S[0])
    seen = [set() for _ in range(n_users)]
    for u,i in train: seen[u].add(i)
    rel,n_na = [set() for _ in range(n_users)],[0]*n_users
    for (u,i),y in zip(valid, vy):
        if y < threshold or u == 0: continue
        if i == 0: n_na[u] += 1        # an item the vocab does not know: relevant, never recommendable
        else: rel[u].add(i)
    tot = dict(precision=0., recall=0., ndcg=0., map=0., hit=0.)
    shown,n_eval = set(),0
    for u in range(n_users):
        R = len(rel[u]) + n_na[u]
        if R == 0: continue
        n_eval += 1
        cands = [i for i in range(1, n_items) if i not in seen[u]]
        top = sorted(cands, key=lambda i: (-S[u][i], i))[:k]
        shown.update(top)
        hits = [i in rel[u] for i in top]
        h = sum(hits)
        dcg = sum(1/math.log2(r+2) for r,x in enumerate(hits) if x)
        idcg = sum(1/math.log2(r+2) for r in range(min(R, k)))
        ap,cnt = 0.,0
        for r,x in enumerate(hits):
            if x: cnt += 1; ap += cnt/(r+1)
        tot['precision'] += h/k; tot['recall'] += h/R; tot['ndcg'] += dcg/idcg
        tot['map'] += ap/min(R, k); tot['hit'] += h > 0
    if n_eval == 0: return None
    res = {f'{n}@{k}': v/n_eval for n,v in tot.items()}
    res[f'coverage@{k}'] = len(shown)/(n_items-1)
    return res

def random_case(seed):
    "Scores, training and validation rows of a random small problem: ties, '#na#' rows, repeats, few candidates"
    rng = np.random.default_rng(seed)
    n_users,n_items = int(rng.integers(2, 14)),int(rng.integers(2, 30))
    S = rng.normal(size=(n_users, n_items))
    if seed % 3 == 0: S = np.round(S*2)            # many ties
    if seed % 5 == 0: S = S.astype(np.float32)
    dens = rng.uniform(0.05, 0.9)
    cells = [(u, i) for u in range(n_users) for i in range(n_items) if rng.random() < dens]
    rng.shuffle(cells)
    cut = int(len(cells)*rng.uniform(0.3, 0.9))
    train = [c for c in cells[:cut] if rng.random() < 0.97] + [cells[0]]*int(seed % 2)   # a repeated pair on odd seeds
    valid = cells[cut:] + [(int(rng.integers(0, n_users)), 0) for _ in range(int(rng.integers(0, 3)))]   # '#na#' items
    vy = rng.choice([1, 2, 3, 3.5, 4, 4.5, 5], len(valid)).tolist()
    return S,train,valid,vy

def _pairs(p): return np.array(p, dtype=np.int64).reshape(-1, 2)

@pytest.mark.parametrize('seed', range(40))
def test_against_reference(seed):
    S,train,valid,vy = random_case(seed)
    for k in (1, 3, 10, 50):
        ref = reference(S.tolist(), train, valid, vy, k)
        if ref is None:
            with pytest.raises(ValueError, match='No validation rating'): ranking_metrics(S, _pairs(train), _pairs(valid), vy, k=k)
            continue
        got = ranking_metrics(torch.from_numpy(S), _pairs(train), _pairs(valid), vy, k=k)
        assert list(got.index) == list(ref)
        np.testing.assert_allclose(got.values, list(ref.values()), atol=1e-6, rtol=0)
        # the same through a score function, in chunks of one or two users
        fn = lambda us: torch.from_numpy(S)[us]
        got2 = ranking_metrics(fn, _pairs(train), _pairs(valid), vy, k=k, n_items=S.shape[1], bs=S.shape[1]*(1 + seed % 2))
        np.testing.assert_allclose(got2.values, got.values, atol=1e-12, rtol=0)

@pytest.mark.parametrize('seed', [100, 101, 103, 104, 105])
def test_several_k_at_once(seed):
    S,train,valid,vy = random_case(seed)
    both = ranking_metrics(S, _pairs(train), _pairs(valid), vy, k=[5, 2])
    for k in (2, 5):
        one = ranking_metrics(S, _pairs(train), _pairs(valid), vy, k=k)
        np.testing.assert_allclose(both[one.index].values, one.values, atol=1e-12)

@pytest.mark.parametrize('threshold', [3.0, 4.5])
def test_threshold(threshold):
    S,train,valid,vy = random_case(7)
    ref = reference(S.tolist(), train, valid, vy, 5, threshold)
    got = ranking_metrics(S, _pairs(train), _pairs(valid), vy, k=5, threshold=threshold)
    np.testing.assert_allclose(got.values, list(ref.values()), atol=1e-6)

# --- evaluate on learners --------------------------------------------------------------------------------------------
def planted(n_users=50, n_items=30, n=900, seed=0):
    "Distinct (user, item) ratings with a planted rank-2 structure"
    rng = np.random.default_rng(seed)
    cells = rng.choice(n_users*n_items, n, replace=False)
    u,i = cells // n_items,cells % n_items
    U,I = rng.normal(size=(n_users, 2)),rng.normal(size=(n_items, 2))
    r = np.clip(np.round(2*(3.2 + (U[u]*I[i]).sum(1) + rng.normal(0, 0.3, n)))/2, 0.5, 5)
    return pd.DataFrame({'user': u + 1000, 'item': [f'item{o}' for o in i], 'rating': r})

def model_reference(learn, k):
    "The reference metrics, scoring every (user, item) cell with one plain call of the model"
    model = learn.model.eval()
    n_users,n_items = (len(learn.dls.classes[n]) for n in list(learn.dls.classes)[:2])
    x = torch.stack([torch.arange(n_users).repeat_interleave(n_items), torch.arange(n_items).repeat(n_users)], 1)
    with torch.no_grad(): S = model(x).view(n_users, n_items).double().tolist()
    dl_t,dl_v = learn.dls.train,learn.dls.valid
    if hasattr(dl_t, 'x'): train,valid,vy = dl_t.x.tolist(),dl_v.x.tolist(),dl_v.y.view(-1).tolist()
    else:
        u,i = list(learn.dls.classes)[:2]
        train,valid = dl_t.items[[u,i]].values.tolist(),dl_v.items[[u,i]].values.tolist()
        vy = dl_v.items[learn.dls.y_names[0]].tolist()
    return reference(S, train, valid, vy, k),np.array(S),valid,vy

@pytest.mark.parametrize('model', ['dot', 'dot_bias', 'nn'])
def test_evaluate_against_reference(model):
    df = planted()
    dls = CFDataLoaders.from_df(df, seed=1, bs=64)
    set_seed(0)
    learn = cf_learner(dls, model, n_factors=6)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(3, 3e-2)
    res = evaluate(learn, k=[5, 10])
    for k in (5, 10):
        ref,_,_,_ = model_reference(learn, k)
        np.testing.assert_allclose(res[list(ref)].values, list(ref.values()), atol=1e-6)
    p = learn.model.eval()(dls.valid.x).detach().view(-1).numpy()
    y = dls.valid.y.view(-1).numpy()
    np.testing.assert_allclose(res[['rmse', 'mae']].values, [np.sqrt(((p-y)**2).mean()), np.abs(p-y).mean()], rtol=1e-5)

def test_evaluate_stock_fastai():
    "fastai's own loaders (vocab from the training rows: validation-only ids are '#na#') and `collab_learner`"
    from fastai.collab import CollabDataLoaders
    df = planted(n=600, seed=3)
    dls = CollabDataLoaders.from_df(df, seed=2, bs=64)
    set_seed(0)
    learn = collab_learner(dls, n_factors=6, y_range=(0, 5.5))
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 3e-2)
    res = evaluate(learn, k=10)
    ref,_,_,_ = model_reference(learn, 10)
    np.testing.assert_allclose(res[list(ref)].values, list(ref.values()), atol=1e-6)
    with learn.no_bar(): np.testing.assert_allclose(res['rmse']**2, learn.validate()[0], rtol=1e-4)

def test_evaluate_threshold_follows_the_scale():
    "On a 1–10 scale the relevant ratings are 8 and up, not 4 and up (issue 20): read from the data and reported"
    df = planted(); df['rating'] = (df.rating*2).clip(1, 10)      # 0.5–5 half stars -> 1–10 whole points
    learn = cf_learner(CFDataLoaders.from_df(df, seed=1, bs=64), n_factors=4)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1)
    res = evaluate(learn)
    assert res['threshold'] == 8.0 == relevance_threshold(learn.dls.train.y)
    pd.testing.assert_series_equal(res, evaluate(learn, threshold=8))
    low = evaluate(learn, threshold=4)
    assert low['threshold'] == 4 and low['recall@10'] != res['recall@10']
    five = df.assign(rating=df.rating/2)
    assert cross_validate(five, 2, fit=1, bs=64).threshold.tolist() == [4.0, 4.0, 4.0]
    with pytest.raises(ValueError, match='pass threshold='): relevance_threshold([])

def test_evaluate_needs_rows(tmp_path):
    df = planted()
    learn = cf_learner(CFDataLoaders.from_df(df, seed=1, bs=64), n_factors=4)
    loaded = load_cf(save_cf(learn, tmp_path/'m.cf'))
    with pytest.raises(ValueError, match='validation rows'): evaluate(loaded)
    with pytest.raises(ValueError, match='k=0'): evaluate(learn, k=0)

# --- folds and cross-validation --------------------------------------------------------------------------------------
def test_cv_folds():
    folds = cv_folds(103, 4, seed=5)
    assert sorted(len(v) for _,v in folds) == [25, 26, 26, 26]
    np.testing.assert_array_equal(np.sort(np.concatenate([v for _,v in folds])), np.arange(103))
    for t,v in folds:
        assert len(np.intersect1d(t, v)) == 0 and len(t) + len(v) == 103
    again = cv_folds(pd.DataFrame({'a': range(103)}), 4, seed=5)
    for (t,v),(t2,v2) in zip(folds, again): np.testing.assert_array_equal(v, v2)
    assert not np.array_equal(cv_folds(103, 4, seed=6)[0][1], folds[0][1])

def test_cross_validate_same_folds_for_every_model():
    df = planted(n=600, seed=4)
    seen = {}
    def recorder(name, model):
        def _fn(dls):
            seen.setdefault(name, []).append((dls.train.x.clone(), dls.valid.x.clone()))
            return cf_learner(dls, model, n_factors=4, fast=False)
        return _fn
    res = {n: cross_validate(df, 3, recorder(n, m), fit=1, seed=7, bs=64) for n,m in (('dot', 'dot'), ('dot_bias', 'dot_bias'), ('nn', 'nn'))}
    for n in ('dot_bias', 'nn'):
        for (ta,va),(tb,vb) in zip(seen['dot'], seen[n]): assert torch.equal(ta, tb) and torch.equal(va, vb)
    # the rows are the folds of `cv_folds(df, 3, seed)`
    full = CFDataLoaders.from_df(df, splits=(np.arange(len(df)), []), bs=64).train.x
    for (_,v),(_,va) in zip(cv_folds(df, 3, seed=7), seen['dot']): assert torch.equal(full[v], va)
    r = res['dot']
    assert list(r.index) == [0, 1, 2, 'mean']
    assert {'rmse', 'mae', 'precision@10', 'recall@10', 'ndcg@10', 'map@10', 'hit@10', 'coverage@10', 'fit_s'} <= set(r.columns)
    np.testing.assert_allclose(r.loc['mean'].values, r.drop(index='mean').mean().values)

def test_cross_validate_times_the_fit_alone(monkeypatch):
    "`fit_s` is the training time: a slow `evaluate` does not count"
    import time, fastai_cf.metrics as M
    real = M.evaluate
    def slow(*args, **kwargs): time.sleep(1.5); return real(*args, **kwargs)
    monkeypatch.setattr(M, 'evaluate', slow)
    r = M.cross_validate(planted(n=600, seed=4), 2, fit=1, bs=64)
    assert (r.fit_s < 1.5).all(), r.fit_s

def test_cross_validate_stock_fastai_rows():
    "`dls_fn` with fastai's own loaders on a fold's rows sees the same validation rows"
    from fastai.collab import TabularCollab
    from fastai.tabular.core import Categorify
    from fastai.data.block import TransformBlock
    df = planted(n=500, seed=5)
    got = []
    def dls_fn(df, splits):
        tr,va = splits
        to = TabularCollab(df, [Categorify], ['user', 'item'], y_names=['rating'], y_block=TransformBlock(), splits=(list(tr), list(va)))
        dls = to.dataloaders(bs=64)
        got.append(np.sort(dls.valid.items.index.to_numpy()))
        return dls
    res = cross_validate(df, 2, lambda dls: collab_learner(dls, n_factors=4, y_range=(0, 5.5)), fit=1, seed=3, dls_fn=dls_fn)
    for g,(_,v) in zip(got, cv_folds(df, 2, seed=3)): np.testing.assert_array_equal(g, v)
    assert np.isfinite(res.loc['mean', 'ndcg@10'])

def test_cross_validate_precomputed_folds():
    df = planted(n=400, seed=6)
    folds = [(np.arange(0, 300), np.arange(300, 400)), (np.arange(100, 400), np.arange(0, 100))]
    seen = []
    def fn(dls):
        seen.append(len(dls.valid.x))
        return cf_learner(dls, n_factors=4)
    res = cross_validate(df, learner_fn=fn, fit=None, folds=folds, bs=64)
    assert seen == [100, 100] and len(res) == 3

# --- ml-100k's own folds, from files the test writes -----------------------------------------------------------------
COLS = ['userId', 'movieId', 'rating', 'timestamp']

def write_100k(d, df, folds, names=None):
    df[COLS].to_csv(d/'u.data', sep='\t', header=False, index=False)
    for n,(tr,va) in zip(names or [f'u{j}' for j in range(1, len(folds)+1)], folds):
        df.iloc[tr][COLS].to_csv(d/f'{n}.base', sep='\t', header=False, index=False)
        df.iloc[va][COLS].to_csv(d/f'{n}.test', sep='\t', header=False, index=False)

def tiny_100k(n=200, seed=0):
    rng = np.random.default_rng(seed)
    cells = rng.choice(40*30, n, replace=False)
    return pd.DataFrame({'userId': cells // 30 + 1, 'movieId': cells % 30 + 1, 'rating': rng.integers(1, 6, n),
                         'timestamp': rng.integers(8e8, 9e8, n)})

def test_ml100k_folds(tmp_path, no_network, fastai_home):
    df = tiny_100k()
    shuffled = [(np.random.default_rng(j).permutation(tr), va[::-1]) for j,(tr,va) in enumerate(cv_folds(df, 5, seed=0))]
    write_100k(tmp_path, df, shuffled)
    folds = ml100k_folds(tmp_path)
    assert len(folds) == 5
    for (t,v),(t0,v0) in zip(folds, cv_folds(df, 5, seed=0)):
        np.testing.assert_array_equal(t, t0); np.testing.assert_array_equal(v, v0)
    # positions index the frame load_movielens returns (titles or not), and a frame passed in
    permuted = df.sample(frac=1, random_state=0).reset_index(drop=True)
    t,v = ml100k_folds(tmp_path, df=permuted, names='u2')[0]
    v0 = cv_folds(df, 5, seed=0)[1][1]
    pd.testing.assert_frame_equal(permuted.iloc[v].sort_values(COLS).reset_index(drop=True), df.iloc[v0].sort_values(COLS).reset_index(drop=True))
    # and plug into cross_validate
    res = cross_validate(df, folds=folds[:2], learner_fn=lambda dls: cf_learner(dls, n_factors=4), fit=1, bs=64)
    assert len(res) == 3

def test_ml100k_folds_errors(tmp_path, no_network, fastai_home):
    df = tiny_100k()
    folds = cv_folds(df, 2, seed=0)
    write_100k(tmp_path, df, folds)
    with pytest.raises(FileNotFoundError, match='u3.base'): ml100k_folds(tmp_path)
    with pytest.raises(FileNotFoundError, match='ua.base, ua.test'): ml100k_folds(tmp_path, names=['ua'])
    with pytest.raises(ValueError, match='not in the ratings frame'): ml100k_folds(tmp_path, df=df.iloc[5:], names=['u1'])
    with pytest.raises(ValueError, match='repeats'): ml100k_folds(tmp_path, df=pd.concat([df, df.iloc[:1]]), names=['u1'])
    (tmp_path/'u1.test').write_text((tmp_path/'u1.test').read_text() + (tmp_path/'u1.base').read_text().splitlines()[0] + '\n')
    with pytest.raises(ValueError, match='share ratings'): ml100k_folds(tmp_path, names=['u1'])
    with pytest.raises(FileNotFoundError): ml100k_folds(tmp_path/'nowhere')

# --- bad arguments ----------------------------------------------------------------------------------------------------
S = torch.tensor([[0., 0, 0, 0], [0, 1, 2, 3], [0, 3, 2, 1]])
TR,VA,VY = [[1, 1], [2, 3]],[[1, 2], [2, 1]],[5., 4.]

@pytest.mark.parametrize('kw,msg', [
    (dict(k=0), 'k=0'), (dict(k=2.5), 'k=2.5'), (dict(k=True), 'k=True'), (dict(k=[]), r'k=\[\]'), (dict(k=[3, -1]), 'k='),
    (dict(threshold=float('nan')), 'threshold'), (dict(threshold='4'), 'threshold'), (dict(threshold=None), 'threshold'),
    (dict(threshold=5.5), 'No validation rating'),
    (dict(train_pairs=[[1.0, 2.0]]), 'integer'), (dict(train_pairs=[1, 2, 3]), r'\(n, 2\)'), (dict(valid_pairs=[[1, 2, 3]]), r'\(n, 2\)'),
    (dict(valid_y=[5.]), 'valid_y has 1'), (dict(train_pairs=[[3, 1]]), 'user rows must be in 0..2'),
    (dict(valid_pairs=[[1, 4], [2, 1]]), 'item rows must be in 0..3'), (dict(train_pairs=[[-1, 1]]), 'user rows'),
    (dict(valid_pairs=[], valid_y=[]), 'No validation rating'), (dict(scores=S[0]), 'matrix'), (dict(scores=S*float('nan')), 'NaN'),
    (dict(scores=lambda us: S[us]), 'n_items'), (dict(scores=lambda us: S[us][:, :2], n_items=4), 'shape'),
])
def test_bad_arguments(kw, msg):
    args = dict(scores=S, train_pairs=TR, valid_pairs=VA, valid_y=VY) | kw
    with pytest.raises(ValueError, match=msg): ranking_metrics(**args)

def test_bad_protocol_arguments():
    df = planted(n=300)
    for n in (1, 0, 301, 2.5, True):
        with pytest.raises(ValueError, match='n_folds'): cv_folds(df, n)
    with pytest.raises(ValueError, match='folds is empty'): cross_validate(df, folds=[])
    with pytest.raises(ValueError, match='valid positions'): cross_validate(df, folds=[(np.arange(10), np.array([400]))])
    with pytest.raises(ValueError, match=r'\(train_idx, valid_idx\)'): cross_validate(df, folds=5)
    with pytest.raises(ValueError, match='fit='): cross_validate(df, 2, fit='5', bs=64)
