"Recommendations, unknown ids, and the `save_cf`/`load_cf` model file: round trips, damaged files, and a fuzz test"
import json, os, pickle, sys, warnings, zipfile
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from fastai.collab import CollabDataLoaders, collab_learner, EmbeddingDotBias, EmbeddingNN
from fastai.learner import load_learner
from fastai.torch_core import set_seed
from fastai_cf.data import CFDataLoaders
from fastai_cf.models import DotProduct, DotProductBias
from fastai_cf.learner import cf_learner
from fastai_cf.inference import CFModelFileError, save_cf, load_cf, _digest

# --- a guard that notices code running during a load ---------------------------------------------------------------
# Audit hooks can't be removed, so this one only records while `_watch` is on. 'pickle.find_class' fires whenever the
# standard (unsafe) unpickler resolves a global: torch's weights-only unpickler never raises it.
_EVENTS = ('pickle.find_class', 'exec', 'os.system', 'subprocess.Popen', 'os.posix_spawn', 'os.exec', 'os.fork')
_watch,_seen_events = [False],[]
def _hook(event, args):
    if _watch[0] and event in _EVENTS: _seen_events.append(event)
sys.addaudithook(_hook)

def guarded_load(fn):
    "`load_cf(fn)`, failing the test if it ran any code from the file"
    _seen_events.clear()
    _watch[0] = True
    try: return load_cf(fn)
    finally:
        _watch[0] = False
        assert not _seen_events, f"loading {fn} ran code: {_seen_events}"

class Payload:
    "Unpickling this creates the file `fn`: proof that loading ran code"
    def __init__(self, fn): self.fn = str(fn)
    def __reduce__(self): return (Path.touch, (Path(self.fn),))

# --- small learners, one per kind of model --------------------------------------------------------------------------
def make_ratings(n_users=30, n_items=20, n=300, seed=0):
    rng = np.random.default_rng(seed)
    cells = rng.choice(n_users*n_items, n, replace=False)
    return pd.DataFrame({'user': cells // n_items + 100, 'item': [f'item {o}' for o in cells % n_items],
                         'rating': rng.integers(1, 11, n) / 2})

@pytest.fixture(scope='module')
def ratings(): return make_ratings()

def _fit(learn):
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit(1, 1e-2)
    return learn

@pytest.fixture(scope='module')
def learners(ratings):
    set_seed(0)
    dls = CFDataLoaders.from_df(ratings, seed=0, bs=32)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        fdls = CollabDataLoaders.from_df(ratings, seed=0, bs=32)
    return {'dot': _fit(cf_learner(dls, 'dot', n_factors=4)),
            'dot_bias': _fit(cf_learner(dls, 'dot_bias', n_factors=4)),
            'nn': _fit(cf_learner(dls, 'nn', n_factors=4)),
            'fastai_dot_bias': _fit(collab_learner(fdls, n_factors=4, y_range=(0, 5.5))),
            'fastai_nn': _fit(collab_learner(fdls, use_nn=True, layers=[6, 5], y_range=(0, 5.5),
                                             config=dict(ps=[0.1, 0.1], embed_p=0.05)))}

@pytest.fixture(scope='module')
def learn(learners): return learners['dot_bias']

@pytest.fixture(scope='module')
def saved(learn, tmp_path_factory):
    fn = tmp_path_factory.mktemp('saved')/'model.pt'
    save_cf(learn, fn)
    return fn

def mixed_frame():
    return pd.DataFrame({'user': [100, 100, 7, 7, 101], 'item': ['item 1', 'no such item', 'item 1', 'no such item', 'item 2']})

def quiet(f, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return f(*args, **kwargs)

def same_model(a, b, ratings):
    "`a` and `b` predict, recommend and find neighbours identically"
    frame = pd.concat([ratings[['user', 'item']], mixed_frame()])
    np.testing.assert_array_equal(quiet(a.predict_ratings, frame), quiet(b.predict_ratings, frame))
    pd.testing.assert_frame_equal(a.recommend(100), b.recommend(100))
    pd.testing.assert_frame_equal(a.similar_items('item 3'), b.similar_items('item 3'))

# --- round trips ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('kind', ['dot', 'dot_bias', 'nn', 'fastai_dot_bias', 'fastai_nn'])
def test_round_trip(learners, ratings, tmp_path, kind):
    learn = learners[kind]
    fn = save_cf(learn, tmp_path/'m.pt')
    assert os.listdir(tmp_path) == ['m.pt']    # no temporary file left behind
    l2 = guarded_load(fn)
    assert type(l2.model) is type(learn.model) and isinstance(l2.dls, CFDataLoaders) and len(l2.dls.train.x) == 0
    assert repr(l2.model) == repr(learn.model)
    for k,v in learn.model.state_dict().items(): assert torch.equal(v, l2.model.state_dict()[k]), k
    same_model(learn, l2, ratings)
    assert all(p.requires_grad for p in l2.model.parameters())    # can be fine-tuned
    assert l2.cf_meta['model']['kind'] in ('dot', 'dot_bias', 'nn', 'embedding_dot_bias')

def test_round_trip_keeps_ids_and_names(learn, saved):
    l2 = load_cf(saved)
    assert list(l2.dls.classes) == ['user', 'item'] and l2.dls.y_names == ['rating']
    assert list(l2.dls.classes['user'].items) == [o.item() if hasattr(o, 'item') else o for o in learn.dls.classes['user'].items]
    assert all(type(o) is int for o in l2.dls.classes['user'].items[1:])
    assert l2.dls.classes['item'].items == learn.dls.classes['item'].items
    assert l2.recommend('100').equals(l2.recommend(100))    # an id typed as text finds the int id
    meta = l2.cf_meta
    assert meta['format'] == 'fastai_cf.model' and meta['format_version'] == 1
    assert meta['n_train_pairs'] == len(learn.dls.train.x) and meta['n_valid_pairs'] == len(learn.dls.valid.x)

def test_save_is_atomic(learn, saved, tmp_path, monkeypatch):
    fn = tmp_path/'m.pt'
    fn.write_bytes(saved.read_bytes())
    before = fn.read_bytes()
    def broken_save(obj, f, *args, **kwargs):
        if hasattr(f, 'write'): f.write(b'half a file')
        else: Path(f).write_bytes(b'half a file')
        raise OSError('disk full')
    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(OSError, match='disk full'): save_cf(learn, fn)
    assert fn.read_bytes() == before and os.listdir(tmp_path) == ['m.pt']

def test_save_creates_folder_and_overwrites(learn, tmp_path):
    fn = tmp_path/'a'/'b'/'m.pt'
    save_cf(learn, fn)
    save_cf(learn, fn)
    assert sorted(os.listdir(fn.parent)) == ['m.pt']

def test_save_without_seen(learn, ratings, tmp_path):
    l2 = load_cf(save_cf(learn, tmp_path/'m.pt', with_seen=False))
    with pytest.warns(UserWarning, match='no training rows'): recs = l2.recommend(100, n=100)
    assert len(recs) == len(learn.dls.classes['item']) - 1    # every item, '#na#' never
    np.testing.assert_array_equal(l2.predict_ratings(ratings), learn.predict_ratings(ratings))

def test_save_refuses_what_it_cant_describe(learn, tmp_path):
    class MyModel(DotProductBias): pass
    l = cf_learner(learn.dls, MyModel(len(learn.dls.classes['user']), len(learn.dls.classes['item']), 4))
    with pytest.raises(ValueError, match='not MyModel'): save_cf(l, tmp_path/'m.pt')
    l = cf_learner(learn.dls, torch.nn.Linear(2, 1))
    with pytest.raises(ValueError, match='learn.export'): save_cf(l, tmp_path/'m.pt')
    assert not (tmp_path/'m.pt').exists()

def test_save_refuses_ids_json_cant_hold(tmp_path):
    df = make_ratings()
    df['item'] = pd.Timestamp('2020-01-01') + pd.to_timedelta(df['item'].str[5:].astype(int), 'D')
    l = cf_learner(CFDataLoaders.from_df(df, seed=0), n_factors=4)
    with pytest.raises(ValueError, match='astype'): save_cf(l, tmp_path/'m.pt')

def test_ids_of_other_types(tmp_path):
    df = make_ratings()
    df['item'] = df['item'].str[5:].astype(int) + 0.5    # float ids
    learn = cf_learner(CFDataLoaders.from_df(df, seed=0), n_factors=4)
    l2 = load_cf(save_cf(learn, tmp_path/'m.pt'))
    assert l2.dls.classes['item'].items[1:] == [float(o) for o in learn.dls.classes['item'].items[1:]]
    np.testing.assert_array_equal(l2.predict_ratings(df), learn.predict_ratings(df))
    df['item'] = df['item'] > 5    # bool ids would come back as other types
    learn = cf_learner(CFDataLoaders.from_df(df, seed=0), n_factors=4)
    with pytest.raises(ValueError, match='is a bool'): save_cf(learn, tmp_path/'b.pt')

def test_export_and_load_learner_still_work(learners, ratings, tmp_path):
    for kind in ('dot_bias', 'fastai_dot_bias', 'nn'):
        learn = learners[kind]
        learn.export(tmp_path/f'{kind}.pkl')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            l2 = load_learner(tmp_path/f'{kind}.pkl')
        np.testing.assert_array_equal(l2.predict_ratings(ratings), learn.predict_ratings(ratings))
        with pytest.warns(UserWarning, match='no training rows'): l2.recommend(100)
        assert len(l2.recommend(100, exclude_seen=False)) == 10

# --- damaged and foreign files --------------------------------------------------------------------------------------
def check_refused(fn, *contains):
    with pytest.raises(CFModelFileError) as e: guarded_load(fn)
    msg = str(e.value)
    assert str(fn) in msg, msg
    for c in contains: assert c in msg, msg
    assert isinstance(e.value, ValueError)
    return msg

def test_truncated(saved, tmp_path):
    data = saved.read_bytes()
    for n in sorted({0, 1, 10, 100, len(data)//3, len(data)//2, len(data) - 100, len(data) - 1}):
        (tmp_path/'t.pt').write_bytes(data[:n])
        check_refused(tmp_path/'t.pt', 'empty' if n == 0 else 'truncated')

def test_foreign_files(learn, tmp_path):
    (tmp_path/'notes.txt').write_text('hello')
    check_refused(tmp_path/'notes.txt', 'not a PyTorch file')
    (tmp_path/'random.bin').write_bytes(np.random.default_rng(0).bytes(5000))
    check_refused(tmp_path/'random.bin')
    (tmp_path/'meta.json').write_text(json.dumps({'format': 'fastai_cf.model', 'format_version': 1}))
    check_refused(tmp_path/'meta.json')
    np.save(tmp_path/'a.npy', np.arange(10))
    check_refused(tmp_path/'a.npy')
    with zipfile.ZipFile(tmp_path/'other.zip', 'w') as z: z.writestr('readme.txt', 'not a model')
    check_refused(tmp_path/'other.zip')
    torch.save(learn.model.state_dict(), tmp_path/'state.pth')
    check_refused(tmp_path/'state.pth', "not one `save_cf` wrote")
    torch.save([1, 2, 3], tmp_path/'list.pth')
    check_refused(tmp_path/'list.pth', "not one `save_cf` wrote")
    learn.save(tmp_path/'fastai_save')
    check_refused(tmp_path/'fastai_save.pth', "learn.load")
    learn.export(tmp_path/'export.pkl')
    check_refused(tmp_path/'export.pkl', 'refused without running them', 'load_learner')
    check_refused(tmp_path, 'not a file')
    with pytest.raises(FileNotFoundError, match='No model file'): load_cf(tmp_path/'missing.pt')

def test_malicious_pickles_are_not_run(tmp_path):
    marker = tmp_path/'pwned'
    # the payload does run when unpickled the unsafe way: the test below would notice
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()
    marker.unlink()
    (tmp_path/'plain.pkl').write_bytes(pickle.dumps({'fastai_cf': Payload(marker)}))
    torch.save({'fastai_cf': Payload(marker)}, tmp_path/'zip.pt')
    torch.save({'fastai_cf': '{}', 'state_dict': {'w': Payload(marker)}}, tmp_path/'nested.pt')
    torch.save({'fastai_cf': Payload(marker)}, tmp_path/'legacy.pt', _use_new_zipfile_serialization=False)
    for name in ('plain.pkl', 'zip.pt', 'nested.pt', 'legacy.pt'):
        check_refused(tmp_path/name)
        assert not marker.exists(), name

def rewrite(saved, fn, edit_meta=None, edit=None, rehash=True):
    "Copy of the file `saved` with its metadata or contents edited (and, unless `rehash=False`, a valid checksum)"
    obj = torch.load(saved, weights_only=True)
    meta = json.loads(obj['fastai_cf'])
    if edit_meta: edit_meta(meta)
    obj['fastai_cf'] = json.dumps(meta)
    if edit: edit(obj)
    if rehash: obj['sha256'] = _digest(obj['fastai_cf'], obj['state_dict'], {k: obj.get(f'{k}_pairs') for k in ('train', 'valid')})
    torch.save(obj, fn)
    return fn

def test_versions_and_formats(saved, tmp_path):
    fn = tmp_path/'m.pt'
    check_refused(rewrite(saved, fn, lambda m: m.update(format_version=2, fastai_cf_version='9.0')), 'format version 2', "'9.0'", 'Upgrade')
    check_refused(rewrite(saved, fn, lambda m: m.update(format_version='1')), "format version '1' is not valid")
    check_refused(rewrite(saved, fn, lambda m: m.update(format_version=0)), "format version 0 is not valid")
    check_refused(rewrite(saved, fn, lambda m: m.update(format='something.else')), "format is 'something.else'")
    check_refused(rewrite(saved, fn, edit=lambda o: o.update(fastai_cf='{not json')), 'not valid JSON')
    assert guarded_load(rewrite(saved, fn)) is not None    # the rewriting itself keeps the file valid

def test_checksum_and_consistency(saved, tmp_path):
    fn = tmp_path/'m.pt'
    def bump(o): o['state_dict']['i_bias.weight'][3] += 1e-3
    check_refused(rewrite(saved, fn, edit=bump, rehash=False), 'checksum')
    check_refused(rewrite(saved, fn, edit=lambda o: o.pop('train_pairs'), rehash=False), 'checksum')
    check_refused(rewrite(saved, fn, edit=lambda o: o.pop('sha256'), rehash=False), 'checksum')
    # consistent checksums over inconsistent contents (a deliberately edited file)
    check_refused(rewrite(saved, fn, lambda m: m['model'].update(n_factors=5)), 'inconsistent', "'i_weight.weight'")
    check_refused(rewrite(saved, fn, lambda m: m['model'].update(kind='transformer')), "unknown model kind 'transformer'")
    check_refused(rewrite(saved, fn, lambda m: m['model'].update(n_factors=10**7)), 'asks for more weights than the file holds')   # refused before allocating
    check_refused(rewrite(saved, fn, lambda m: m['items'].__setitem__(1, m['items'][0])), 'repeats one')
    check_refused(rewrite(saved, fn, lambda m: m['users'].pop()), 'inconsistent')
    check_refused(rewrite(saved, fn, lambda m: m['model'].update(n_users=10**12)), 'inconsistent')    # never allocated
    check_refused(rewrite(saved, fn, edit=lambda o: o['state_dict'].__setitem__('extra', torch.zeros(1))), "'extra'")
    def far(o): o['train_pairs'][0, 0] = 10**6
    check_refused(rewrite(saved, fn, edit=far), 'outside the vocab')

def test_fuzz_byte_corruption(learn, saved, ratings, tmp_path):
    "Random damage either raises `CFModelFileError` or leaves the model exactly as saved; no code ever runs"
    data = saved.read_bytes()
    rng = np.random.default_rng(42)
    fn,outcomes = tmp_path/'fuzz.pt',{'refused': 0, 'loaded': 0}
    frame = ratings[['user', 'item']].iloc[:50]
    want = learn.predict_ratings(frame)
    for k in range(300):
        b = bytearray(data)
        how = k % 4
        if how == 0:    # flip a few bits
            for p in rng.integers(0, len(b), rng.integers(1, 4)): b[p] ^= 1 << int(rng.integers(0, 8))
        elif how == 1:  # overwrite a run with random bytes
            p = int(rng.integers(0, len(b) - 16)); b[p:p+16] = rng.bytes(16)
        elif how == 2:  # cut the file short
            b = b[:int(rng.integers(1, len(b)))]
        else:           # drop or insert a byte
            p = int(rng.integers(0, len(b)))
            b = b[:p] + b[p+1:] if rng.random() < 0.5 else b[:p] + bytes([int(rng.integers(0, 256))]) + b[p:]
        fn.write_bytes(bytes(b))
        try: l2 = guarded_load(fn)
        except CFModelFileError: outcomes['refused'] += 1
        else:
            outcomes['loaded'] += 1
            np.testing.assert_array_equal(l2.predict_ratings(frame), want)
    assert outcomes['refused'] >= 200, outcomes

# --- recommendations and unknown ids --------------------------------------------------------------------------------
def test_recommend(learn, ratings):
    recs = learn.recommend(100, n=5)
    assert list(recs.columns) == ['item', 'prediction'] and len(recs) == 5
    assert recs.prediction.is_monotonic_decreasing
    assert not set(ratings.item[ratings.user == 100]) & set(learn.recommend(100, n=100).item)
    assert '#na#' not in set(learn.recommend(100, n=100, exclude_seen=False).item)
    x = learn.dls.train.x
    train_seen = {learn.dls.classes['item'].items[j] for j in x[x[:,0] == learn.dls.classes['user'].o2i[100], 1].tolist()}
    assert not train_seen & set(learn.recommend(100, n=100, exclude_seen='train').item)

def test_recommend_unknown_user(learn):
    with pytest.raises(KeyError, match="user 7 is not in the model's vocab"): learn.recommend(7)
    with pytest.raises(KeyError, match="'#na#'"): learn.recommend('#na#')
    with pytest.warns(UserWarning, match='average user'): recs = learn.recommend(7, n=3, unknown='fallback')
    assert len(recs) == 3
    for bad in (dict(n=0), dict(n=2.5), dict(unknown='ignore'), dict(exclude_seen='all')):
        with pytest.raises(ValueError): learn.recommend(100, **bad)

def test_similar_items(learn):
    sim = learn.similar_items('item 3', n=5)
    assert list(sim.columns) == ['item', 'similarity'] and 'item 3' not in set(sim.item) and sim.similarity.is_monotonic_decreasing
    d = learn.similar_items('item 3', n=5, metric='euclidean')
    assert list(d.columns) == ['item', 'distance'] and d.distance.is_monotonic_increasing
    with pytest.raises(KeyError, match="Did you mean 'item 3'"): learn.similar_items('Item 3 ')
    with pytest.raises(ValueError, match='metric'): learn.similar_items('item 3', metric='jaccard')
    counts = np.bincount(learn.dls.train.x[:, 1].numpy(), minlength=len(learn.dls.classes['item']))
    floor = min(10, counts.max() // 2)
    o2i = learn.dls.classes['item'].o2i
    assert all(counts[o2i[o]] >= floor for o in learn.similar_items('item 3', n=100).item)    # rarely rated items left out
    assert len(learn.similar_items('item 3', n=100, min_ratings=1)) == (counts[1:] > 0).sum() - 1

def test_predict_ratings_fallback(learners):
    frame = mixed_frame()
    for kind,learn in learners.items():
        with pytest.warns(UserWarning, match=r'3 of 5 row\(s\) have ids not seen in training \(2 with a new user, 2 with a new item\)'):
            p = learn.predict_ratings(frame)
        assert p.dtype == np.float32 and p.shape == (5,) and np.isfinite(p).all(), kind
        assert ((p > 0) & (p < 5.5)).all(), kind
        np.testing.assert_array_equal(p[[0, 4]], learn.predict_ratings(frame.iloc[[0, 4]]))
        with pytest.raises(KeyError, match=r"user \[7\]; item \['no such item'\]"): learn.predict_ratings(frame, unknown='error')
        before = {k: v.clone() for k,v in learn.model.state_dict().items()}
        quiet(learn.predict_ratings, frame)
        for k,v in learn.model.state_dict().items(): assert torch.equal(v, before[k]), (kind, k)    # row 0 restored

def test_fallback_formula(learn):
    m,iv = learn.model,learn.dls.classes['item']
    x = learn.dls.train.x
    users = torch.unique(x[:, 0])
    j = iv.o2i['item 1']
    raw = (m.u_weight.weight[users].mean(0) * m.i_weight.weight[j]).sum() + m.u_bias.weight[users].mean() + m.i_bias.weight[j, 0]
    want = torch.sigmoid(raw) * 5.5
    p = quiet(learn.predict_ratings, pd.DataFrame({'user': [7], 'item': ['item 1']}))
    np.testing.assert_allclose(p[0], want.item(), rtol=1e-6)

def test_validation_only_ids_are_unknown(ratings):
    "With a vocab from all rows (fastai's, for text ids), ids only in the validation set have untrained embeddings"
    valid = np.flatnonzero(ratings.user.to_numpy() == 100)
    train = np.setdiff1d(np.arange(len(ratings)), valid)
    learn = _fit(cf_learner(CFDataLoaders.from_df(ratings, splits=(train, valid), vocab='all'), n_factors=4))   # the vocab of every row
    assert 100 in learn.dls.classes['user'].o2i
    with pytest.raises(KeyError, match='only in the validation set'): learn.recommend(100)
    p_valid_only = quiet(learn.predict_ratings, pd.DataFrame({'user': [100], 'item': ['item 1']}))
    p_new = quiet(learn.predict_ratings, pd.DataFrame({'user': [7], 'item': ['item 1']}))
    np.testing.assert_array_equal(p_valid_only, p_new)

def test_predict_ratings_bad_input(learn):
    with pytest.raises(ValueError, match=r"Column\(s\) \['item'\] not found"): learn.predict_ratings(pd.DataFrame({'user': [100]}))
    with pytest.raises(ValueError, match='DataFrame'): learn.predict_ratings([(100, 'item 1')])
    assert learn.predict_ratings(pd.DataFrame({'user': [], 'item': []})).shape == (0,)
    with pytest.warns(UserWarning, match='1 of 1'): learn.predict_ratings(pd.DataFrame({'user': [None], 'item': ['item 1']}))


def test_loaded_model_refuses_to_fit(saved):
    "A model file holds the model and its vocab, not the ratings: fitting it says so, instead of fastai's empty-generator NaN"
    learn = load_cf(saved)
    with pytest.raises(ValueError, match='holds the model and its vocab, not the training ratings'): learn.fit_one_cycle(1)

# --- the rating scale: what users are shown -------------------------------------------------------------------------
def test_rating_scale_kept_and_old_files_load(learn, ratings, saved, tmp_path):
    "The file keeps the training ratings' scale; a file written before the scale was stored loads, its scale read from `y_range`"
    scale = (float(ratings.rating.min()), float(ratings.rating.max()))
    assert tuple(learn.model.y_range) == (0, 5.5) and scale == (0.5, 5.0)
    l2 = guarded_load(saved)
    assert l2.cf_scale == scale
    old = guarded_load(rewrite(saved, tmp_path/'old.pt', lambda m: m.pop('rating_scale')))
    assert old.cf_scale == (0., 5.)          # the lesson's (0, 5.5): five stars
    same_model(old, l2, ratings)             # every prediction is >= 0.5 here, so (0, 5) clips as (0.5, 5) does
    p = quiet(old.predict_ratings, ratings, clip=False)
    np.testing.assert_array_equal(quiet(old.predict_ratings, ratings), p.clip(0, 5))
    fn = tmp_path/'bad.pt'
    check_refused(rewrite(saved, fn, lambda m: m.update(rating_scale=[5, 1])), 'rating scale')
    check_refused(rewrite(saved, fn, lambda m: m.update(rating_scale=['1', 5])), 'rating scale')
    check_refused(rewrite(saved, fn, lambda m: m.update(rating_scale=[1, 5, 10])), 'rating scale')

def test_predictions_shown_clipped_ranking_kept(saved, ratings):
    "A model that predicts past the scale's top: `recommend` and `predict_ratings` show at most the top rating, in the model's order"
    learn = load_cf(saved)
    iv = learn.dls.classes['item']
    with torch.no_grad(): learn.model.i_bias.weight[[iv.o2i['item 1'], iv.o2i['item 2']]] += 5   # two items everyone loves, past 5 stars
    raw,shown = (learn.recommend(100, n=20, exclude_seen=False, min_ratings=1, clip=c) for c in (False, True))
    assert raw.prediction.max() > 5.0           # the model does go past the scale, so the check below can fail
    assert shown.prediction.max() <= 5.0 and shown.prediction.min() >= 0.5
    assert list(shown.item) == list(raw.item) and set(raw.item[:2]) == {'item 1', 'item 2'}
    np.testing.assert_array_equal(shown.prediction, raw.prediction.clip(0.5, 5))
    p = learn.predict_ratings(ratings, clip=False)
    assert p.max() > 5 and learn.predict_ratings(ratings).max() <= 5
