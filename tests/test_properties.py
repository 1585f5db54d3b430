"Property test: `CFDataLoaders.from_df` on arbitrary small frames either builds loaders that hold exactly the input rows, or raises `ValueError`"
import math, warnings
from collections import Counter
import numpy as np, pandas as pd, torch
from hypothesis import event, given, settings, HealthCheck, strategies as st
from fastai_cf.data import CFDataLoaders

NAN = float('nan')
# Values a column can hold, as they come out of messy exports: numbers, text, missing values, or a mix.
# Half the frames draw only from the clean kinds, so that about half of them build.
ID_VALUES = {
    'int': st.integers(-3, 6),
    'float': st.sampled_from([0., 1.5, -2., 3., 1e9]),
    'str': st.sampled_from(['a', 'b', 'B', ' a', 'é', '', '1', 'None']),
    'bool': st.booleans(),
    'float_nan': st.sampled_from([0., 1.5, NAN]),
    'int_or_none': st.one_of(st.integers(0, 4), st.none()),
    'int_or_str': st.one_of(st.integers(0, 4), st.sampled_from(['a', 'b', '2'])),
    'int_or_float': st.one_of(st.integers(0, 4), st.sampled_from([1.0, 2.5])),
}
RATING_VALUES = {
    'float': st.floats(-10, 10, width=32),
    'int': st.integers(-2, 10),
    'numeric_str': st.sampled_from(['1', '2.5', '3', '4.0', '5', '-1', '1e1']),
    'bool': st.booleans(),
    'float_nan_inf': st.one_of(st.floats(0, 5), st.sampled_from([NAN, math.inf, -math.inf])),
    'dirty_str': st.sampled_from(['1', '2.5', 'x', '', ' 3', '4,5', 'nan']),
    'float_or_none': st.one_of(st.floats(0, 5), st.none()),
    'mixed': st.one_of(st.floats(0, 5), st.integers(0, 5), st.booleans(), st.sampled_from(['3', 'x']), st.none()),
}
CLEAN = {'int', 'float', 'str', 'bool', 'numeric_str'}
CASTS = {'int': [None, 'category', 'Int64', 'float64'], 'str': [None, 'category', 'string', 'object'],
         'float': [None, 'category'], 'int_or_none': [None, 'Int64'], 'bool': [None, 'boolean'], 'float_nan': [None, 'category']}

@st.composite
def ratings_frames(draw):
    "A frame of 0-50 rows: user and item ids and ratings of random kinds and dtypes, with NaNs and repeated pairs"
    n = draw(st.integers(0, 50))
    clean = draw(st.booleans())
    cols = {}
    for name,pool in (('user', ID_VALUES), ('item', ID_VALUES), ('rating', RATING_VALUES)):
        kind = draw(st.sampled_from(sorted(k for k in pool if k in CLEAN or not clean)))
        if name != 'rating' and draw(st.booleans()):     # few distinct ids: many repeated (user, item) pairs
            vals = draw(st.lists(pool[kind], min_size=2, max_size=2 if kind == 'bool' else 4, unique_by=repr))
            col = [vals[draw(st.integers(0, len(vals)-1))] for _ in range(n)]
        else: col = draw(st.lists(pool[kind], min_size=n, max_size=n))
        s = pd.Series(col, dtype=object if kind != 'float' or name == 'rating' else None)
        s = s.infer_objects() if draw(st.booleans()) else s
        cast = draw(st.sampled_from(CASTS.get(kind, [None]) if name != 'rating' else [None]))
        if cast is not None:
            try: s = s.astype(cast)
            except (TypeError, ValueError): pass
        cols[name] = s
    df = pd.DataFrame(cols)
    if draw(st.booleans()): df['timestamp'] = np.arange(n)
    if draw(st.booleans()): df = df[['rating', 'item', 'user'] + list(df.columns[3:])]   # names, not positions, say which is which
    return df

def _key(v):
    "An id as the frame and the vocab hold it, comparable across numpy and Python scalars"
    return v.item() if isinstance(v, np.generic) else v

def _decoded(dls, dl):
    u,i = dls.cat_names
    x,y = dl.x.cpu(),dl.y.cpu()
    return [(_key(dls.classes[u].items[a]), _key(dls.classes[i].items[b]), float(r)) for (a,b),r in zip(x.tolist(), y[:,0].tolist())]

def _expected(df, duplicates):
    "The rows the loaders should hold: ids as given, ratings as float32 numbers"
    r = df['rating']
    r = pd.to_numeric(r, errors='coerce') if not pd.api.types.is_numeric_dtype(r) or pd.api.types.is_bool_dtype(r) else r
    r = r.astype('float64')
    rows = list(zip(map(_key, df['user']), map(_key, df['item']), r.tolist()))
    if duplicates == 'last': rows = list({(a, b): (a, b, v) for a,b,v in rows}.values())
    return Counter((a, b, float(np.float32(v))) for a,b,v in rows)

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(df=ratings_frames(), valid_pct=st.sampled_from([0.1, 0.2, 0.5, 0.9]), bs=st.one_of(st.none(), st.integers(1, 20)),
       duplicates=st.sampled_from(['keep', 'keep', 'last', 'error']), split=st.sampled_from(['random', 'random', 'user', 'time']),
       shuffle=st.booleans(), seed=st.integers(0, 3), order=st.sampled_from(['fastai', 'perm']))
def test_from_df_builds_matching_loaders_or_raises_value_error(df, valid_pct, bs, duplicates, split, shuffle, seed, order):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try: dls = CFDataLoaders.from_df(df, valid_pct=valid_pct, user_name='user', item_name='item', rating_name='rating',
                                         bs=bs, duplicates=duplicates, split=split, shuffle=shuffle, seed=seed, device='cpu',
                                         vocab='all', order=order)
        except ValueError as e:             # a bad frame: `ValueError` is the only acceptable failure
            event('refused: ' + ' '.join(w for w in str(e).split()[:5] if not any(c.isdigit() for c in w)))
            return
    event('built')
    tr,va = dls.train,dls.valid
    for dl in (tr, va):
        assert dl.x.dtype == torch.long and dl.x.ndim == 2 and dl.x.shape[1] == 2
        assert dl.y.dtype == torch.float32 and dl.y.shape == (len(dl.x), 1)
        assert (dl.x > 0).all(), "every id of the frame is in the vocab ('#na#' is index 0)"
    assert len(tr.x) >= 1 and len(tr.x) + len(va.x) <= len(df)
    assert Counter(_decoded(dls, tr)) + Counter(_decoded(dls, va)) == _expected(df, duplicates)
    # the batches: the validation loader yields its rows in order; the training loader a permutation of them (or fastai's draws), in full batches
    vb = list(va)
    if len(va.x): assert torch.equal(torch.cat([b[0] for b in vb]), va.x) and torch.equal(torch.cat([b[1] for b in vb]), va.y)
    tb = list(tr)
    assert all(len(b[0]) == len(b[1]) <= tr.bs for b in tb)
    got = torch.cat([torch.cat([b[0], b[1]], 1) for b in tb]) if tb else torch.zeros(0, 3)
    want = torch.cat([tr.x.float(), tr.y], 1)
    n = len(want) - len(want) % tr.bs if tr.drop_last else len(want)
    assert len(got) == n and n >= min(len(want), tr.bs)
    if shuffle and order == 'perm': assert Counter(map(tuple, got.tolist())) <= Counter(map(tuple, want.tolist()))
    elif shuffle: assert set(map(tuple, got.tolist())) <= set(map(tuple, want.tolist()))   # fastai's draws, with replacement
    else: assert torch.equal(got, want)
