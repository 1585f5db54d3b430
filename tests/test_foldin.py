"`Learner.fold_in`: new users fitted against the frozen item tables, as training would fit them; bad input changes nothing"
import copy, json, warnings
import numpy as np, pandas as pd, pytest, torch
from fastai.collab import CollabDataLoaders, collab_learner
from fastai.torch_core import set_seed
from fastai_cf.data import CFDataLoaders, synth_ratings, cf_splits
from fastai_cf.models import DotProduct, DotProductBias
from fastai_cf.learner import cf_learner
from fastai_cf.inference import save_cf, load_cf, _pairs, _train_recipe, _digest
from fastai_cf.cli import main

U,I,R = 'userId','movieId','rating'

def quiet(f, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return f(*args, **kwargs)

def _fit(learn, epochs=5):
    with learn.no_bar(), learn.no_logging(): quiet(learn.fit_one_cycle, epochs)
    return learn

@pytest.fixture(scope='module')
def data():
    "A planted rank-4 set: 20 users held out, 80% of each one's ratings to fold in, 20% to predict"
    df = synth_ratings(n_users=300, n_items=120, n_ratings=30_000, noise=0.3, seed=1).drop_duplicates([U, I], keep='last')
    rng = np.random.default_rng(0)
    held = rng.choice(df[U].unique(), 20, replace=False)
    rest = df[~df[U].isin(held)].reset_index(drop=True)
    fold,test = [],[]
    for _,g in df[df[U].isin(held)].groupby(U):
        idx = rng.permutation(g.index.to_numpy()); k = int(round(0.8*len(idx)))
        fold.append(idx[:k]); test.append(idx[k:])
    return rest,df.loc[np.concatenate(fold), [U, I, R]].reset_index(drop=True),df.loc[np.concatenate(test), [U, I, R]].reset_index(drop=True)

def _train(df, splits=None, fast=True, model='dot_bias'):
    set_seed(42, reproducible=True)
    return _fit(cf_learner(quiet(CFDataLoaders.from_df, df, seed=42, bs=256, splits=splits), model, n_factors=8, fast=fast))

@pytest.fixture(scope='module')
def base(data): return _train(data[0])

def clone(learn):
    "A copy of `learn` that folds in as `learn` would (`deepcopy` drops the `Recorder`'s learning rates: keep its recipe)"
    res = copy.deepcopy(learn)
    res.cf_recipe,res.opt = _train_recipe(learn),None
    return res

def rmse(p, y): return float(np.sqrt(np.mean((np.asarray(p) - np.asarray(y))**2)))

def snapshot(learn):
    "Everything fold_in may change"
    p = _pairs(learn)
    return ({k: v.clone() for k,v in learn.model.state_dict().items()}, {k: list(v) for k,v in learn.dls.classes.items()},
            None if p is None else p.clone(), learn.opt, learn.__dict__.get('cf_recipe'))

def assert_same(a, b):
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    assert a[1] == b[1] and a[3] is b[3] and a[4] == b[4]
    assert (a[2] is None and b[2] is None) or torch.equal(a[2], b[2])

# --- accuracy: as good as retraining, far better than the average user ------------------------------------------------
@pytest.mark.parametrize('fast', [True, False])
def test_close_to_retrain(data, base, fast):
    rest,fold,test = data
    b = base if fast else _train(rest, fast=False)
    p_fb = quiet(b.predict_ratings, test, unknown='fallback')
    fl = clone(b)
    ids = fl.fold_in(fold)
    assert ids == list(dict.fromkeys(fold[U].tolist()))
    tr,va = cf_splits(rest, 'random', 0.2, 42)
    full = _train(pd.concat([rest, fold], ignore_index=True), (np.concatenate([tr, len(rest) + np.arange(len(fold))]), va), fast=fast)
    r_fold,r_fb,r_full = rmse(fl.predict_ratings(test, unknown='error'), test[R]),rmse(p_fb, test[R]),rmse(full.predict_ratings(test), test[R])
    assert r_fold < 1.05*r_full, (r_fold, r_full)
    assert r_fold < r_fb - (0.1 if fast else 0.), (r_fold, r_fb)    # stock fastai (lr 1e-3) barely trains this data in 5 epochs

def test_penalty_follows_weight_decay(data, base):
    "More weight decay in training, smaller folded-in rows: the ridge penalty is read from the learner, not a constant"
    rc,norms = _train_recipe(base),[]
    assert rc['lr_sum'] > 0 and rc['wd'] == base.opt.hypers[0]['wd']
    for k in (dict(wd=0.3), dict(wd=3.0), dict(wd=3.0, lr_sum=rc['lr_sum']/10)):    # a shorter run: less far from zero
        l = clone(base)
        l.cf_recipe = rc | k
        l.fold_in(data[1])
        norms.append(l.model.u_weight.weight[-20:].norm().item())
    assert norms[1] < 0.7*norms[0] and norms[2] < 0.9*norms[1], norms

# --- afterwards they are ordinary users ------------------------------------------------------------------------------
def test_ordinary_users(data, base, tmp_path):
    _,fold,_ = data
    l = clone(base)
    n_users,n_items = len(l.dls.classes[U]),len(l.dls.classes[I])
    sim = l.similar_items(l.dls.classes[I][1], n=5)
    ids = l.fold_in(fold)
    assert len(l.dls.classes[U]) == n_users + len(ids) and l.model.classes is l.dls.classes
    assert l.model.u_weight.weight.shape[0] == l.model.u_bias.weight.shape[0] == n_users + len(ids)
    assert l.model.u_weight.sparse and l.model.u_bias.sparse and l.model.u_weight.num_embeddings == n_users + len(ids)
    assert len(l.dls.classes[I]) == n_items and l.similar_items(l.dls.classes[I][1], n=5).equals(sim)
    u = ids[0]
    rated = set(fold[I][fold[U] == u])
    recs = l.recommend(u, n=20)
    assert not rated & set(recs[I]) and len(recs) == 20
    assert not quiet(l.recommend, u, n=5).equals(quiet(l.recommend, 10**6, n=5, unknown='fallback'))   # their own list
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        p = l.predict_ratings(fold)    # no fallback warning: every user is known
    assert rmse(p, fold[R]) < min(0.8, rmse(quiet(base.predict_ratings, fold), fold[R]) - 0.2)
    l2 = load_cf(save_cf(l, tmp_path/'m.pt'))
    pd.testing.assert_frame_equal(l2.recommend(u), l.recommend(u), check_dtype=False)    # ids come back from JSON as int64
    assert list(l2.dls.classes[U]) == list(l.dls.classes[U])
    np.testing.assert_array_equal(l2.predict_ratings(fold), p)
    x = torch.tensor([[l.dls.classes[U].o2i[u], 1]])
    assert torch.equal(l.model.eval()(x), l2.model.eval()(x))

def test_training_goes_on(data, base):
    "The optimizer is dropped (its tables grew); the next fit makes a fresh one and trains the new rows too"
    l = clone(base)
    l.fold_in(data[1])
    assert l.opt is None
    before = l.model.u_weight.weight[-1].detach().clone()
    _fit(l, 1)
    assert l.opt is not None and not torch.equal(before, l.model.u_weight.weight[-1])

def test_loaded_model_folds_in(data, base, tmp_path):
    "A model file keeps the training recipe; one without it (an older file) says so before changing anything"
    _,fold,test = data
    l = load_cf(save_cf(base, tmp_path/'m.pt'))
    assert l.cf_recipe == _train_recipe(base)
    ref = clone(base)
    ref.fold_in(fold)
    l.fold_in(fold)
    np.testing.assert_allclose(l.predict_ratings(test), ref.predict_ratings(test), atol=1e-5)
    obj = torch.load(tmp_path/'m.pt', weights_only=True)
    meta = json.loads(obj['fastai_cf']); del meta['training']
    obj['fastai_cf'] = json.dumps(meta)
    obj['sha256'] = _digest(obj['fastai_cf'], obj['state_dict'], {k: obj.get(f'{k}_pairs') for k in ('train', 'valid')})
    torch.save(obj, tmp_path/'old.pt')
    old = load_cf(tmp_path/'old.pt')
    snap = snapshot(old)
    with pytest.raises(ValueError, match='no training rows and no recipe'): old.fold_in(fold)
    assert_same(snap, snapshot(old))

def test_known_user_refit(data, base):
    "A known user's row is refitted from their training ratings plus the new ones: as a new user with all of them"
    rest,_,_ = data
    l = clone(base)
    uv,iv = l.dls.classes[U],l.dls.classes[I]
    u = rest[U].iloc[0]
    row = uv.o2i[u]
    x,y = l.dls.train.x,l.dls.train.y[:,0]
    mine = pd.DataFrame({U: 'copy', I: [iv[j] for j in x[x[:,0] == row, 1].tolist()], R: y[x[:,0] == row].numpy()})
    item = next(o for o in iv[1:] if o not in set(rest[I][rest[U] == u]))
    new = pd.DataFrame({U: [u], I: [item], R: [0.5]})
    before = l.model.u_weight.weight[row].detach().clone()
    assert l.fold_in(new) == [u]
    assert len(l.dls.classes[U]) == len(uv)       # no new row
    assert not torch.equal(before, l.model.u_weight.weight[row])
    l2 = clone(base)
    l2.fold_in(pd.concat([new.assign(**{U: 'copy'}), mine]))
    torch.testing.assert_close(l.model.u_weight.weight[row], l2.model.u_weight.weight[-1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(l.model.u_bias.weight[row], l2.model.u_bias.weight[-1], atol=1e-4, rtol=1e-4)

def test_duplicates_keep_the_last(base):
    item = base.dls.classes[I][1]
    l = clone(base)
    l.fold_in(pd.DataFrame({U: ['a', 'a', 'a'], I: [item]*3, R: [5., 5., 0.5]}))
    l2 = clone(base)
    l2.fold_in(pd.DataFrame({U: ['a'], I: [item], R: [0.5]}))
    assert torch.equal(l.model.u_weight.weight[-1], l2.model.u_weight.weight[-1])

# --- models ----------------------------------------------------------------------------------------------------------
def test_models(data):
    rest,fold,test = data
    ys = test[R]
    for model in ('dot', DotProductBias(1, 1, 1)):
        if isinstance(model, str): l = _train(rest, model=model)
        else:
            set_seed(0)
            dls = quiet(CFDataLoaders.from_df, rest, seed=42, bs=256)
            l = _fit(cf_learner(dls, DotProductBias.from_dls(dls, 8, y_range=None)))    # a raw dot product: no sigmoid
        fb = rmse(quiet(l.predict_ratings, test), ys)
        l.fold_in(fold)
        assert rmse(l.predict_ratings(test), ys) < fb - 0.05
    set_seed(0)
    fdls = quiet(CollabDataLoaders.from_df, rest, seed=42, bs=256)
    fl = _fit(quiet(collab_learner, fdls, n_factors=8, y_range=(0, 5.5), wd=0.1))
    fb = rmse(quiet(fl.predict_ratings, test), ys)
    assert not _train_recipe(fl)['lazy'] and _train_recipe(fl)['decay_bias']
    ids = fl.fold_in(fold)
    assert rmse(fl.predict_ratings(test), ys) < fb - 0.1 and all(fl.dls.classes[U].o2i[o] for o in ids)
    nl = _fit(cf_learner(quiet(CFDataLoaders.from_df, rest, seed=42, bs=256), 'nn', n_factors=8), 1)
    snap = snapshot(nl)
    with pytest.raises(ValueError, match='not EmbeddingNN'): nl.fold_in(fold)
    assert_same(snap, snapshot(nl))

# --- bad input: a clear error, and the learner exactly as it was -----------------------------------------------------
def _bad_frames(fold):
    f = fold.copy()
    return {
        'empty': (f.iloc[:0], ValueError, 'empty frame'),
        'not a frame': (f.to_numpy(), ValueError, 'takes a DataFrame'),
        'no rating column': (f.drop(columns=R), ValueError, "Column(s) ['rating'] not found"),
        'NaN rating': (f.assign(**{R: np.where(np.arange(len(f)) == 3, np.nan, f[R])}), ValueError, 'missing or not numbers'),
        'text rating': (f.assign(**{R: 'five'}), ValueError, 'missing or not numbers'),
        'inf rating': (f.assign(**{R: np.inf}), ValueError, 'missing or not numbers'),
        'above y_range': (f.assign(**{R: f[R] + 10}), ValueError, "outside the model's y_range"),
        'below y_range': (f.assign(**{R: -1.}), ValueError, "outside the model's y_range"),
        'all items unknown': (f.assign(**{I: -5}), ValueError, 'None of the'),
        'missing user id': (f.assign(**{U: np.where(np.arange(len(f)) == 0, np.nan, f[U])}), ValueError, 'missing ids'),
        'unknown item, error': (pd.concat([f, f.iloc[:1].assign(**{I: -5})]), KeyError, 'items the model was not trained on: [-5]'),
    }

@pytest.mark.parametrize('case', list(_bad_frames(pd.DataFrame({U: [1], I: [1], R: [1.]}))))
def test_bad_input_changes_nothing(data, base, case):
    df,err,msg = _bad_frames(data[1])[case]
    l = copy.deepcopy(base)      # with its optimizer, which a failed fold-in keeps
    snap = snapshot(l)
    with pytest.raises(err, match=msg.replace('(', r'\(').replace(')', r'\)').replace('[', r'\[').replace(']', r'\]')):
        l.fold_in(df, unknown='error' if 'error' in case else 'warn')
    assert_same(snap, snapshot(l))

def test_bad_arguments(data, base):
    l = copy.deepcopy(base)
    snap = snapshot(l)
    with pytest.raises(ValueError, match="unknown='drop'"): l.fold_in(data[1], unknown='drop')
    with pytest.raises(ValueError, match='steps=0'): l.fold_in(data[1], steps=0)
    assert_same(snap, snapshot(l))

def test_unknown_items_warn(data, base):
    fold = data[1]
    extra = pd.DataFrame({U: [fold[U].iloc[0], 'only unknown'], I: [-5, -6], R: [3., 3.]})
    l = clone(base)
    with pytest.warns(UserWarning, match=r"2 of \d+ row\(s\) have items the model was not trained on.*'only unknown'.*not folded in"):
        ids = l.fold_in(pd.concat([fold, extra]))
    assert 'only unknown' not in ids and 'only unknown' not in l.dls.classes[U].o2i
    assert len(ids) == fold[U].nunique()

# --- the command line ------------------------------------------------------------------------------------------------
def test_cli_recommend_from_ratings(data, base, tmp_path, capsys):
    fn = save_cf(base, tmp_path/'m.cf')
    mine = data[1][data[1][U] == data[1][U].iloc[0]].drop(columns=U)
    mine.to_csv(tmp_path/'mine.csv', index=False)
    before = fn.read_bytes()
    assert main(['recommend', str(fn), '--ratings', str(tmp_path/'mine.csv'), '-n', '4']) == 0
    out = capsys.readouterr().out
    l = load_cf(fn)
    l.fold_in(mine.assign(**{U: 'me'}))
    assert all(str(o) in out for o in l.recommend('me', n=4)[I])
    assert fn.read_bytes() == before                   # no --save: the model file is untouched
    assert main(['recommend', str(fn), '--ratings', str(tmp_path/'mine.csv'), '--user', 'ann', '--save']) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.cf', 'mine.csv']    # written atomically: no temporary file left
    assert 'ann' in load_cf(fn).dls.classes[U].o2i
    assert main(['recommend', str(fn), '--user', 'ann', '-n', '4']) == 0
    assert main(['recommend', str(fn)]) == 2
    assert main(['recommend', str(fn), '--user', 'ann', '--save']) == 2
    data[1].to_csv(tmp_path/'many.csv', index=False)
    assert main(['recommend', str(fn), '--ratings', str(tmp_path/'many.csv')]) == 2
    err = capsys.readouterr().err
    assert 'pass --user to choose one' in err and '--save writes the users' in err
