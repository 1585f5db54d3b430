"The `fastai-cf` console command, end to end through the installed script (subprocess)"
import os, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest

EXE = shutil.which('fastai-cf') or str(Path(sys.executable).parent/'fastai-cf')

def run(*args, cwd=None, timeout=600):
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore'}
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)

@pytest.fixture(scope='module')
def csv(tmp_path_factory):
    "A small planted ratings CSV with non-default column names"
    rng = np.random.default_rng(0)
    U,I = rng.normal(size=(50,3)),rng.normal(size=(40,3))
    rows = [(u, f'film {i}', float(np.clip(np.round(2*(3 + U[u]@I[i]))/2, 0.5, 5)))
            for u in range(50) for i in range(40) if rng.random() < 0.5]
    p = tmp_path_factory.mktemp('data')/'stars.csv'
    pd.DataFrame(rows, columns=['who','film','stars']).to_csv(p, index=False)
    return p

@pytest.fixture(scope='module')
def trained(csv, tmp_path_factory):
    out = tmp_path_factory.mktemp('out')
    r = run('train', '--data', csv, '--epochs', 2, '--lr', 0.03, '--out', out)
    assert r.returncode == 0, r.stderr
    return out, r

def test_help_lists_commands_and_defaults():
    r = run('--help')
    assert r.returncode == 0 and all(c in r.stdout for c in ('train', 'recommend', 'similar', 'sweep-wd'))
    for cmd,opt in (('train', "--epochs"), ('recommend', '--user'), ('similar', '--item'), ('sweep-wd', '--wds')):
        h = run(cmd, '--help')
        assert h.returncode == 0 and opt in h.stdout, (cmd, h.stdout)
    assert '(default: 5)' in run('train', '--help').stdout

def test_version_and_help_without_fastai():
    "`--version` and every `--help` answer before fastai is imported (importing it takes seconds)"
    import fastai_cf
    r = run('--version')
    assert r.returncode == 0 and r.stdout.strip() == f'fastai-cf {fastai_cf.__version__}'
    code = "import sys, fastai_cf.cli; print(sorted(m for m in ('fastai', 'torch', 'pandas', 'matplotlib') if m in sys.modules))"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == '[]', r.stdout + r.stderr

def test_train_outputs(trained):
    out,r = trained
    assert 'final validation RMSE' in r.stdout and 'weight decay: ' in r.stdout and 'top 5 recommendations' in r.stdout
    assert sorted(o.name for o in out.iterdir()) == ['model.cf', 'weight_decay.png']
    assert (out/'weight_decay.png').read_bytes()[:4] == b'\x89PNG'
    assert '\r' not in r.stdout, 'no progress-bar fragments when output is not a terminal'

def test_recommend_and_similar(trained):
    out,_ = trained
    r = run('recommend', out/'model.cf', '--user', 3, '-n', 4)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 5       # header + 4 rows
    r = run('similar', out/'model.cf', '--item', 'film 7', '-n', 3)
    assert r.returncode == 0, r.stderr
    assert 'film 7' not in r.stdout.splitlines()[1:]

def _shown_predictions(stdout):
    "The prediction column of the recommendation tables in `stdout` (rows of an item and a number, under a header)"
    res = []
    for l in stdout.splitlines():
        w = l.split()
        try: res.append(float(w[-1]))
        except (ValueError, IndexError): pass
    return res

def test_recommendations_clipped_to_the_scale(csv, trained, tmp_path):
    "A model that predicts past five stars (two items pushed up): the CLI shows at most 5.00, in the model's order"
    import torch
    from fastai_cf.inference import load_cf, save_cf
    out,r = trained
    assert 0 < max(_shown_predictions(r.stdout.split('top 5 recommendations')[1].split('model saved')[0])) <= 5
    learn = load_cf(out/'model.cf')
    iv = learn.dls.classes['film']
    with torch.no_grad(): learn.model.i_bias.weight[[iv.o2i['film 1'], iv.o2i['film 2']]] += 5
    fn = save_cf(learn, tmp_path/'past5.cf')
    raw = learn.recommend(3, n=6, clip=False)
    assert raw.prediction.max() > 5.0          # unclipped it would print above the scale: the check below can fail
    r = run('recommend', fn, '--user', 3, '-n', 6)
    assert r.returncode == 0, r.stderr
    shown = _shown_predictions(r.stdout)
    assert len(shown) == 6 and max(shown) == 5.0 and min(shown) >= 0.5, r.stdout
    assert [l.rsplit(None, 1)[0].strip() for l in r.stdout.strip().splitlines()[1:]] == list(raw.film)   # the same order

def test_sweep_wd(csv, tmp_path):
    r = run('sweep-wd', '--wds', '0,0.1', '--data', csv, '--epochs', 2, '--lr', 0.03, '--out', tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'final_valid_loss' in r.stdout and (tmp_path/'wd_sweep.png').exists()

ERRORS = [
    (('train', '--data', '/no/such/ratings.csv'), 'No such ratings file'),
    (('train', '--data', 'ml-7m'), 'neither a MovieLens set'),
    (('train', '--data', '{csv}', '--item-col', 'movie'), "Column 'movie' (item_name) not found"),
    (('train', '--data', '{csv}', '--valid-pct', 1.5), 'valid_pct=1.5 must be a fraction'),
    (('train', '--data', '{csv}', '--epochs', 0), '--epochs 0 must be at least 1'),
    (('train', '--data', '{csv}', '--bs', 0), 'bs=0 must be a positive whole number'),
    (('train', '--model', 'svd'), "invalid choice: 'svd'"),
    (('train', '--epochs', 'many'), "invalid int value: 'many'"),
    (('recommend', '{model}', '--user', 'nobody'), "--user 'nobody' is not in the model's vocabulary"),
    (('similar', '{model}', '--item', 'No Such Film'), "--item 'No Such Film' is not in the model's vocabulary"),
    (('recommend', '{csv}', '--user', 1), "can't be loaded as a fastai_cf model"),
    (('sweep-wd', '--wds', 'a,b'), "--wds 'a,b' must be comma-separated numbers"),
    (('train', '--data', '{csv}', '--user', 'nobody'), "--user 'nobody' is not in the model's vocabulary"),   # before training
    (('train', '--data', '{csv}', '--wd', 60), '--lr 0.02 times --wd 60 must be below 1'),
    (('frobnicate',), "unknown command 'frobnicate'"),
]

@pytest.mark.parametrize('args,msg', ERRORS, ids=[' '.join(map(str, a[:2])) + f' {i}' for i,(a,_) in enumerate(ERRORS)])
def test_user_errors(args, msg, csv, trained):
    sub = {'{csv}': str(csv), '{model}': str(trained[0]/'model.cf')}
    r = run(*[sub.get(a, a) if isinstance(a, str) else a for a in args])
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert msg in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr
    if not msg.startswith('invalid'): assert len(r.stderr.strip().splitlines()) == 1, r.stderr

def test_debug_shows_traceback(csv):
    r = run('train', '--data', csv, '--item-col', 'movie', '--debug')
    assert r.returncode != 0 and 'Traceback' in r.stderr

@pytest.mark.slow
def test_default_train_on_bundled_data(tmp_path):
    "README's main job: no arguments, the bundled data, offline"
    r = run('train', cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr
    rmse = float(r.stdout.split('final validation RMSE ')[1].split()[0])
    assert rmse <= 0.871, rmse          # stock fastai's lesson figure: MSE 0.758
    assert (tmp_path/'cf_out'/'model.cf').exists() and (tmp_path/'cf_out'/'weight_decay.png').exists()

# ---- a user's own files through `fastai-cf train`: each trains, or exits 2 with one line naming the CLI flag that fixes it
_ROWS = [(u, f'film {i}', float(1 + (u*7 + i*3) % 9 / 2)) for u in range(30) for i in range(20) if (u + i) % 3]
def _text(sep=',', header=True, extra=(), ids=False):
    rows = [(u, int(i.split()[1]) + 100, r) if ids else (u, i, r) for u,i,r in _ROWS]   # ids: every field a number, as MovieLens
    lines = ([sep.join(['who', 'film', 'stars'])] if header else []) + [sep.join(map(str, r)) for r in rows] + list(extra)
    return '\n'.join(lines) + '\n'

USER_FILES = [   # (name, file text, extra options, None to train, or the message expected)
    ('no header', _text(header=False, ids=True), (), '--no-header'),
    ('no header, --no-header', _text(header=False, ids=True), ('--no-header',), None),
    ('TSV without --sep', _text(sep='\t'), (), '--sep'),
    ('TSV, --sep \\t as typed in a shell', _text(sep='\t'), ('--sep', '\\t'), None),
    ('semicolons, --sep ;', _text(sep=';'), ('--sep', ';'), None),
    ('duplicates refused', _text(extra=['0,film 1,4.0']), ('--duplicates', 'error'), '--duplicates keep, last or mean'),
    ('duplicates averaged', _text(extra=['0,film 1,4.0']), ('--duplicates', 'mean'), None),
    ('several bad rows', _text(extra=['3,film 2,', '4,,3.5', '5,film 3,x']), (), '--drop-bad-rows'),
    ('several bad rows, dropped', _text(extra=['3,film 2,', '4,,3.5', '5,film 3,x']), ('--drop-bad-rows',), None),
]

@pytest.mark.parametrize('name,text,opts,msg', USER_FILES, ids=[o[0] for o in USER_FILES])
def test_user_files(name, text, opts, msg, tmp_path, capsys):
    from fastai_cf.cli import main
    p = tmp_path/'ratings.csv'; p.write_text(text)
    rc = main(['train', '--data', str(p), '--epochs', '1', '--out', str(tmp_path/'out'), *opts])
    out,err = capsys.readouterr()
    if msg is None:
        assert rc == 0 and 'final validation RMSE' in out, err
        return
    err = [l for l in err.splitlines() if not l.startswith('warning:')]
    assert rc == 2 and len(err) == 1 and msg in err[0], (rc, err)
    for py in ('header=None', 'drop_bad_rows=', 'duplicates=', 'sep=', 'item_name='): assert py not in err[0], err[0]
    assert not (tmp_path/'out'/'model.cf').exists()
