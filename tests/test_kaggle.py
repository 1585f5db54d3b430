"""Kaggle-style install: the wheel, into an environment that already holds fastai, offline.

A Kaggle notebook image already has fastai and everything it depends on, and often no internet. This test builds the
wheel, makes a fresh venv whose site-packages holds exactly fastai and its dependency closure (links to this
environment's copies: not this checkout, not its editable install, not the `dev` tools), installs the wheel with
`pip install --no-deps --no-index`, and runs the tutorial's main steps and `fastai-cf train` there with the network
cut (`unshare -n`, else a `sitecustomize` that refuses sockets)."""
import importlib.metadata as md, os, re, shutil, subprocess, sys, zipfile
from pathlib import Path
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

root = Path(__file__).parent.parent

def closure(name):
    "Distributions `name` needs when installed without extras: itself and its requirements, recursively"
    seen, todo = {}, [name]
    while todo:
        nm = canonicalize_name(todo.pop())
        if nm in seen: continue
        seen[nm] = dist = md.distribution(nm)
        for r in map(Requirement, dist.requires or []):
            if r.marker is None or r.marker.evaluate({'extra': ''}): todo.append(r.name)
    return seen

def _link_dists(dists, site):
    "Link the top-level files and folders of `dists` (from their RECORDs) into `site`"
    for dist in dists.values():
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != '..' and f.parts[0] != '__pycache__'}:
            src, dst = Path(dist.locate_file(top)), site/top
            if src.exists() and not dst.exists(): dst.symlink_to(src)

_BLOCK = '''import socket
def _refuse(*args, **kwargs): raise OSError("network unreachable (blocked for the Kaggle-style test)")
socket.socket.connect = socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
'''

def _no_net_prefix():
    "A command prefix that runs a program without network: `unshare -n` (root) or `unshare -rn` (user namespace)"
    for pre in (['unshare', '-n'], ['unshare', '-rn']):
        if shutil.which(pre[0]) and subprocess.run(pre + ['true'], capture_output=True).returncode == 0: return pre
    return None

@pytest.fixture(scope='module')
def kaggle(tmp_path_factory):
    "(python, bin folder, wheel, network-blocking prefix, work folder) of a fresh fastai-only venv with our wheel"
    tmp = tmp_path_factory.mktemp('kaggle')
    src = tmp/'src'
    src.mkdir()
    for f in ('pyproject.toml', 'README.md', 'LICENSE'): shutil.copy(root/f, src/f)
    shutil.copytree(root/'fastai_cf', src/'fastai_cf', ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index', '-q',
                    '-w', str(tmp/'dist'), str(src)], check=True, capture_output=True)
    whl, = (tmp/'dist').glob('fastai_cf-*.whl')
    venv = tmp/'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, capture_output=True)
    py = venv/'bin'/'python'
    site = Path(subprocess.run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                               capture_output=True, text=True, check=True).stdout.strip())
    dists = closure('fastai')
    assert 'fastai-cf' not in dists and 'nbdev' not in dists
    _link_dists(dists, site)
    pre = _no_net_prefix()
    if pre is None: (site/'sitecustomize.py').write_text(_BLOCK)
    work = tmp/'work'
    work.mkdir()
    r = subprocess.run([py, '-m', 'pip', 'install', '--no-deps', '--no-index', '-q', str(whl)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return py, venv/'bin', whl, pre or [], work, dists

def _run(kaggle, cmd, **kwargs):
    py, bin_, whl, pre, work, _ = kaggle
    env = {'PATH': f'{bin_}:/usr/bin:/bin', 'HOME': str(work), 'FASTAI_HOME': str(work/'fastai_home'),
           'MPLBACKEND': 'Agg', 'PYTHONNOUSERSITE': '1', 'LANG': 'C.UTF-8'}
    return subprocess.run(pre + cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900, **kwargs)

def test_wheel_needs_nothing_fastai_lacks(kaggle):
    "Every dependency the wheel declares is fastai or one of its own; the wheel ships no licence-restricted data"
    _, _, whl, _, _, dists = kaggle
    with zipfile.ZipFile(whl) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))).decode()
        names = z.namelist()
    reqs = [Requirement(l.split(':', 1)[1].strip()) for l in meta.splitlines() if l.startswith('Requires-Dist:')]
    need = {canonicalize_name(r.name) for r in reqs if r.marker is None or r.marker.evaluate({'extra': ''})}
    assert 'fastai' in need and need <= set(dists), sorted(need - set(dists))
    assert any(n.endswith('datasets/ml-latest-small/ratings.csv') for n in names)
    assert not any('ml-100k' in n or 'u.data' in n for n in names)

def test_network_is_blocked(kaggle):
    r = _run(kaggle, ['python', '-c', "import socket; socket.create_connection(('1.1.1.1', 80), timeout=3)"])
    assert r.returncode != 0 and ('OSError' in r.stderr or 'unreachable' in r.stderr), r.stderr

_TUTORIAL = '''
import fastai_cf, sys, importlib.util
assert fastai_cf.__file__.startswith(sys.prefix), fastai_cf.__file__      # the installed wheel, not a checkout
assert importlib.util.find_spec('nbdev') is None                           # the dev tools are not here
from fastai_cf.all import *
dls = CFDataLoaders.from_movielens(seed=42)
learn = cf_learner(dls)
learn.fit_one_cycle(1)
mse = float(learn.validate()[0])
recs = learn.recommend(1, n=5)
sims = learn.similar_items('Silence of the Lambs, The (1991)', n=3)
print(f'mse={mse:.4f} n_recs={len(recs)} n_sims={len(sims)}')
'''

def test_tutorial_steps(kaggle):
    r = _run(kaggle, ['python', '-c', _TUTORIAL])
    assert r.returncode == 0, r.stderr[-3000:]
    print(r.stdout)
    m = re.search(r'mse=([\d.]+) n_recs=(\d+) n_sims=(\d+)', r.stdout)
    assert m, r.stdout
    assert float(m[1]) < 0.9 and m[2] == '5' and m[3] == '3', r.stdout

def test_cli_train(kaggle):
    r = _run(kaggle, ['fastai-cf', 'train', '--epochs', '1', '--out', 'cf_out'])
    print(r.stdout[-1500:], r.stderr[-1500:])
    assert r.returncode == 0, r.stderr[-3000:]
    work = kaggle[4]
    assert (work/'cf_out'/'model.cf').stat().st_size > 0
    assert not (work/'fastai_home').exists() or not any((work/'fastai_home').rglob('*.zip'))   # nothing downloaded
