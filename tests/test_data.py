"Data loading and input checking: formats, downloads (faked, never the network), and each bad input's message"
import hashlib, io, warnings, zipfile
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
import fastai_cf.data as fd
from fastai_cf.data import *

GOOD = pd.DataFrame({'user':[1,1,2,3,3], 'item':['a','b','a','c','b'], 'rating':[4.,3.,5.,1.,2.]})

# ---- bad input: each gets its own error type and message -------------------------------------------------
BAD = [
    ('missing column', lambda: check_ratings(GOOD, item_name='film'),
     ValueError, "Column 'film' (item_name) not found; the frame has columns ['user', 'item', 'rating']"),
    ('empty frame', lambda: check_ratings(GOOD.iloc[:0]), ValueError, 'empty'),
    ('NaN rating', lambda: check_ratings(GOOD.assign(rating=[4,np.nan,5,1,2])), ValueError, '1 missing or infinite rating(s), first at row 1'),
    ('inf rating', lambda: check_ratings(GOOD.assign(rating=[4,5,np.inf,1,2])), ValueError, 'missing or infinite rating(s), first at row 2'),
    ('non-numeric rating', lambda: check_ratings(GOOD.assign(rating=['4','3','five','1','2'])), ValueError, "non-numeric value(s), first at row 2 (value 'five')"),
    ('NaN user id', lambda: check_ratings(GOOD.assign(user=[1,None,2,3,3])), ValueError, "1 user id(s) in column 'user' are missing"),
    ('NaN item id', lambda: check_ratings(GOOD.assign(item=['a',None,'a','c','b'])), ValueError, "1 item id(s) in column 'item' are missing"),
    ('one user', lambda: check_ratings(GOOD.assign(user=7)), ValueError, 'needs at least 2 users'),
    ('one item', lambda: check_ratings(GOOD.assign(item='a')), ValueError, 'needs at least 2 items'),
    ('mixed id types', lambda: check_ratings(GOOD.assign(user=[1,'1',2,3,3])), ValueError, 'mixes id types (int, str)'),
    ('duplicates=error', lambda: check_ratings(pd.concat([GOOD, GOOD.iloc[:1]]), duplicates='error'), ValueError, "1 repeated (user, item) pair(s), e.g. (1, 'a')"),
    ('bad duplicates option', lambda: check_ratings(GOOD, duplicates='first'), ValueError, 'duplicates='),
    ('not a frame', lambda: check_ratings([[1,2,3]]), ValueError, 'Expected a pandas DataFrame'),
    ('same column twice', lambda: check_ratings(GOOD, user_name='item'), ValueError, 'three different columns'),
    ('valid_pct 0', lambda: CFDataLoaders.from_df(GOOD, valid_pct=0), ValueError, 'valid_pct=0 must be a fraction strictly between 0 and 1'),
    ('valid_pct 1', lambda: CFDataLoaders.from_df(GOOD, valid_pct=1), ValueError, 'valid_pct=1 must be'),
    ('bs 0', lambda: CFDataLoaders.from_df(GOOD, bs=0), ValueError, 'bs=0 must be a positive whole number'),
    ('unknown split', lambda: CFDataLoaders.from_df(GOOD, split='items'), ValueError, "split='items': use one of"),
    ('time split, no time', lambda: CFDataLoaders.from_df(GOOD, split='time'), ValueError, "split='time' needs a time column"),
    ('splits out of range', lambda: CFDataLoaders.from_df(GOOD, splits=([0,1,2], [9])), ValueError, 'positions must be in 0..4'),
    ('unknown vocab', lambda: CFDataLoaders.from_df(GOOD, vocab='valid'), ValueError, "vocab='valid'"),
    ('unknown MovieLens set', lambda: load_movielens('ml-7m'), ValueError, "Unknown MovieLens set 'ml-7m'. Known sets:"),
]

@pytest.mark.parametrize('name,f,exc,msg', BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, f, exc, msg):
    with pytest.raises(exc) as e: f()
    assert msg in str(e.value)

def test_wrong_separator_hint(tmp_path):
    p = tmp_path/'r.csv'; p.write_text('user;item;rating\n1;a;4\n2;b;3\n')
    with pytest.raises(ValueError, match="wrong separator"): CFDataLoaders.from_csv(p)
    assert CFDataLoaders.from_csv(p, sep=';', bs=1, valid_pct=0.5, seed=0).train.n == 1

def test_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='No such ratings file'): read_ratings_csv(tmp_path/'nope.csv')
    with pytest.raises(FileNotFoundError, match='is a folder'): read_ratings_csv(tmp_path)
    p = tmp_path/'latin.csv'; p.write_bytes('user,item,rating\n1,Café,4\n'.encode('latin-1'))
    with pytest.raises(ValueError, match="pass encoding='latin-1'"): read_ratings_csv(p)
    p = tmp_path/'ragged.csv'; p.write_text('user,item,rating\n1,a,4\n2,b,3,9\n')
    with pytest.raises(ValueError, match='Fix the ragged line'): read_ratings_csv(p)
    p = tmp_path/'empty.csv'; p.write_text('')
    with pytest.raises(ValueError, match='is empty'): read_ratings_csv(p)

def test_csv_bom_crlf_quotes(tmp_path):
    p = tmp_path/'r.csv'
    p.write_bytes(b'\xef\xbb\xbfuser,item,rating\r\n1,"Hello, World (1999)",4\r\n2,b,3.5\r\n3,b,2\r\n')
    df = read_ratings_csv(p)
    assert list(df.columns) == ['user','item','rating'] and df.item[0] == 'Hello, World (1999)' and df.rating.tolist() == [4,3.5,2]

# ---- duplicates ------------------------------------------------------------------------------------------------
def test_duplicates():
    d = pd.DataFrame({'user':[1,1,2,1], 'item':['a','b','a','a'], 'rating':[4.,3.,5.,2.]})
    with pytest.warns(UserWarning, match=r'1 repeated \(user, item\) pair\(s\) kept'): assert len(check_ratings(d)) == 4
    assert check_ratings(d, duplicates='last').rating.tolist() == [3.,5.,2.]
    assert check_ratings(d, duplicates='mean').rating.tolist() == [3.,5.,3.]
    dls = CFDataLoaders.from_df(d.assign(user=[1,1,2,1]), duplicates='mean', splits=([0,1,2],[]), bs=1, shuffle=False)
    assert sorted(dls.train.y[:,0].tolist()) == [3.,3.,5.]

def test_movielens_small_lesson_rows():
    with pytest.warns(UserWarning, match='4 repeated'):
        df = check_ratings(load_movielens(), 'userId', 'title', 'rating')
    assert len(df) == 100_836 and df.userId.nunique() == 610

# ---- MovieLens formats, paths, downloads (all local) --------------------------------------------------------------
def _write_100k(d):
    d.mkdir(parents=True)
    (d/'u.data').write_text('1\t10\t4\t881250949\n2\t10\t3\t891717742\n1\t20\t5\t878887116\n')
    (d/'u.item').write_bytes('10|Caf\xe9 (1995)|01-Jan-1995||x|0\n20|Toy Story (1995)|01-Jan-1995||x|0\n'.encode('latin-1'))

def _write_csv_set(d, with_bom=False):
    d.mkdir(parents=True)
    (d/'ratings.csv').write_bytes(b'userId,movieId,rating,timestamp\r\n1,1,4.0,964982703\r\n2,2,3.5,964981247\r\n1,2,5.0,964982224\r\n')
    (d/'movies.csv').write_bytes(b'movieId,title,genres\r\n1,"Toy Story, The (1995)",Animation\r\n2,Jumanji (1995),Adventure\r\n')

def _zip_of(folder, zip_fn):
    with zipfile.ZipFile(zip_fn, 'w') as z:
        for f in folder.iterdir(): z.write(f, f'{folder.name}/{f.name}')
    return zip_fn

def test_formats(tmp_path):
    _write_100k(tmp_path/'ml-100k')
    df = load_movielens('ml-100k', path=tmp_path)
    assert df.title.tolist() == ['Café (1995)']*2 + ['Toy Story (1995)'] and df.rating.dtype == np.float64
    d = tmp_path/'ml-1m'; d.mkdir()
    (d/'ratings.dat').write_text('1::1193::5::978300760\n2::661::3::978302109\n')
    (d/'movies.dat').write_bytes('1193::Cuckoo\xe9 (1975)::Drama\n661::James (1996)::Animation\n'.encode('latin-1'))
    df = load_movielens('ml-1m', path=d)
    assert df.title.tolist() == ['Cuckooé (1975)', 'James (1996)'] and list(df.columns[:4]) == ['userId','movieId','rating','timestamp']
    _write_csv_set(tmp_path/'ml-25m')
    df = load_movielens('ml-25m', path=tmp_path/'ml-25m')
    assert df.title.tolist() == ['Toy Story, The (1995)', 'Jumanji (1995)', 'Jumanji (1995)']
    assert list(load_movielens('ml-25m', path=tmp_path, titles=False).columns) == ['userId','movieId','rating','timestamp']

def test_missing_title_keeps_row(tmp_path):
    d = tmp_path/'ml-latest'; _write_csv_set(d)
    (d/'movies.csv').write_text('movieId,title,genres\n1,Toy Story (1995),Animation\n')
    df = load_movielens('ml-latest', path=d)
    assert len(df) == 3 and df.title.tolist()[1] == 'movieId 2'

def test_offline_no_copy(fastai_home, no_network):
    with pytest.raises(FileNotFoundError) as e: load_movielens('ml-25m')
    msg = str(e.value)
    assert 'Could not download ml-25m' in msg and 'Put ml-25m.zip in' in msg and str(fastai_home) in msg
    assert not list((fastai_home/'archive').glob('*')), 'no partial file left behind'

def _fake_download(monkeypatch, zip_src, calls):
    import fastdownload
    def fake(url, dest=None, **kwargs):
        calls.append(url); Path(dest).write_bytes(Path(zip_src).read_bytes()); return Path(dest)
    monkeypatch.setattr(fastdownload, 'download_url', fake)

def test_download_checked_and_cached(tmp_path, fastai_home, monkeypatch):
    _write_100k(tmp_path/'src'/'ml-100k')
    z = _zip_of(tmp_path/'src'/'ml-100k', tmp_path/'ml-100k.zip')
    md5 = hashlib.md5(z.read_bytes()).hexdigest()
    monkeypatch.setitem(fd.MOVIELENS, 'ml-100k', dict(fmt='100k', md5=md5))
    calls = []; _fake_download(monkeypatch, z, calls)
    assert len(load_movielens('ml-100k')) == 3 and len(calls) == 1
    assert len(load_movielens('ml-100k')) == 3 and len(calls) == 1, 'second load uses the cache'
    assert (fastai_home/'data'/'ml-100k'/'u.data').exists()

def test_download_checksum_mismatch_removes_file_and_retry_works(tmp_path, fastai_home, monkeypatch):
    _write_100k(tmp_path/'src'/'ml-100k')
    z = _zip_of(tmp_path/'src'/'ml-100k', tmp_path/'ml-100k.zip')
    monkeypatch.setitem(fd.MOVIELENS, 'ml-100k', dict(fmt='100k', md5='0'*32))
    calls = []; _fake_download(monkeypatch, z, calls)
    with pytest.raises(ValueError, match='corrupt or incomplete.*deleted'): load_movielens('ml-100k')
    assert not (fastai_home/'archive'/'ml-100k.zip').exists()
    monkeypatch.setitem(fd.MOVIELENS, 'ml-100k', dict(fmt='100k', md5=hashlib.md5(z.read_bytes()).hexdigest()))
    assert len(load_movielens('ml-100k')) == 3 and len(calls) == 2

def test_sha256_pin(tmp_path, fastai_home):
    _write_100k(tmp_path/'src'/'ml-100k')
    z = _zip_of(tmp_path/'src'/'ml-100k', tmp_path/'ml-100k.zip')
    with pytest.raises(ValueError, match='its sha256 is'): movielens_path('ml-100k', path=z, sha256='ab'*32)
    z = _zip_of(tmp_path/'src'/'ml-100k', tmp_path/'ml-100k.zip')
    assert len(load_movielens('ml-100k', path=z, sha256=hashlib.sha256(z.read_bytes()).hexdigest())) == 3

def test_not_a_zip(tmp_path, fastai_home):
    z = tmp_path/'ml-1m.zip'; z.write_bytes(b'not a zip')
    with pytest.raises(ValueError): movielens_path('ml-1m', path=z)

# ---- loaders -------------------------------------------------------------------------------------------------------------
def test_same_validation_rows_as_fastai():
    from fastai.collab import CollabDataLoaders
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ratings = load_movielens()
        dls = CFDataLoaders.from_movielens(seed=42, device='cpu')
        fdls = CollabDataLoaders.from_df(ratings, item_name='title', seed=42, device='cpu')
    fv = fdls.valid.items
    theirs = list(zip([fdls.classes['userId'][j] for j in fv.userId], [fdls.classes['title'][j] for j in fv.title], fv.rating.astype('float32')))
    ours = dls.valid.decode_frame(max_n=None)
    assert list(zip(ours.userId, ours.title, ours.rating)) == theirs
    assert list(dls.valid.items.index) == list(fv.index)

def test_batches_cover_rows_and_fixed_seed_repeats():
    df = pd.DataFrame({'u':np.arange(100)%7, 'i':np.arange(100)%11, 'r':np.linspace(.5,5,100)})
    dls = CFDataLoaders.from_df(df, bs=16, seed=1, device='cpu', order='perm')
    torch.manual_seed(3); a = torch.cat([y for _,y in dls.train])
    torch.manual_seed(3); b = torch.cat([y for _,y in dls.train])
    assert torch.equal(a, b) and len(a) == (80//16)*16
    fa = CFDataLoaders.from_df(df, bs=16, seed=1, device='cpu')      # fastai's draws: with replacement, numpy's RNG
    np.random.seed(3); c = torch.cat([y for _,y in fa.train])
    np.random.seed(3); assert torch.equal(c, torch.cat([y for _,y in fa.train])) and len(c) == (80//16)*16
    assert sorted(dls.valid.y[:,0].tolist() + dls.train.y[:,0].tolist()) == sorted(df.r.astype('float32').tolist())

def test_user_split_keeps_every_user_in_training():
    df = pd.DataFrame({'u':np.repeat(np.arange(30), np.arange(30)+2), 'i':0, 'r':1.})
    df['i'] = np.arange(len(df)) % 50
    tr,va = cf_splits(df, 'user', valid_pct=0.5, seed=0, user_name='u')
    assert set(df.u.iloc[tr]) == set(df.u) and len(set(tr) & set(va)) == 0 and len(tr)+len(va) == len(df)

def test_test_dl_unknown_ids_reported():
    dls = CFDataLoaders.from_df(GOOD, splits=([0,1,2,3,4],[]), bs=2, device='cpu')
    with pytest.warns(UserWarning, match=r"2 test row\(s\) have a user or item not seen"):
        tdl = dls.test_dl(pd.DataFrame({'user':[1,9,1], 'item':['a','a','zzz']}))
    assert tdl.x.tolist() == [[1,1],[0,1],[1,0]] and tdl.y is None
    with pytest.raises(ValueError, match=r"column\(s\) \['item'\] not found"): dls.test_dl(pd.DataFrame({'user':[1]}))

def test_export_load_learner(tmp_path):
    from fastai.collab import collab_learner
    from fastai.learner import load_learner
    dls = CFDataLoaders.from_df(GOOD, splits=([0,1,2,3],[4]), bs=2, device='cpu', path=tmp_path)
    learn = collab_learner(dls, n_factors=3, y_range=(0,5.5))
    learn.export('m.pkl')
    l2 = load_learner(tmp_path/'m.pkl')
    assert list(l2.dls.classes['item']) == ['#na#','a','b','c']
    x = dls.valid.x
    assert torch.allclose(l2.model(x), learn.model(x))

@pytest.mark.slow
def test_wheel_ships_the_data(tmp_path):
    "The bundled MovieLens must be in an installed wheel, not only in this checkout"
    import subprocess, sys
    root = Path(__file__).parents[1]
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp_path), str(root)], check=True)
    whl, = tmp_path.glob('fastai_cf-*.whl')
    names = zipfile.ZipFile(whl).namelist()
    for f in ('ratings.csv', 'movies.csv', 'README.txt', 'SHA256SUMS', 'links.csv', 'tags.csv'):
        assert f'fastai_cf/datasets/ml-latest-small/{f}' in names, f
