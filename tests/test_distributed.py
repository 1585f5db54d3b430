"Multi-process training (DDP): 2 CPU processes with gloo on the bundled data give the single-process model"
import inspect, os, re, subprocess, sys
from pathlib import Path
import pandas as pd, pytest, torch
from fastcore.script import anno_parser

def _env():
    "This environment without any launcher's variables, one thread per process (CI has 2 cores)"
    env = {k:v for k,v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')}
    return {**env, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}

def _py(*args, cwd, timeout=600):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=_env())

TORCHRUN = ('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', 2)
JOB = ('-m', 'fastai_cf.distributed', '--epochs', 2)

def _mse(out): return float(pd.read_csv(Path(out)/'history.csv').valid_loss.iloc[-1])
def _rmse(stdout): return float(re.search(r'final validation RMSE ([\d.]+)', stdout).group(1))

@pytest.fixture(scope='module')
def single(tmp_path_factory):
    "The reference: the same job in one process, no launcher"
    d = tmp_path_factory.mktemp('one')
    r = _py(*JOB, '--out', d/'out', cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    return d/'out', r

@pytest.mark.slow
def test_two_processes_match_one(single, tmp_path):
    r = _py(*TORCHRUN, *JOB, '--out', tmp_path/'out', cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(o.name for o in (tmp_path/'out').iterdir()) == ['history.csv', 'model.cf']   # one model, one table
    assert r.stdout.count('train_loss') == 1 and r.stdout.count('final validation') == 1        # rank 0 alone prints
    assert 'on 2 process(es)' in r.stdout and 'on 1 process(es)' in single[1].stdout
    assert len(pd.read_csv(tmp_path/'out'/'history.csv')) == 2
    one,two = _mse(single[0]),_mse(tmp_path/'out')
    assert abs(two - one) <= 0.03 * one, (one, two)
    # the union of the ranks' half-batches is the one-process batch: the same model, up to float rounding
    from fastai_cf.inference import load_cf
    m1,m2 = (load_cf(p/'model.cf').model for p in (single[0], tmp_path/'out'))
    for (n,a),b in zip(m1.state_dict().items(), m2.state_dict().values()): assert torch.allclose(a, b, atol=1e-3), n

def _wired():
    from fastai_cf import cli
    return 'nproc' in inspect.signature(cli.train).parameters

@pytest.mark.slow
@pytest.mark.skipif(not _wired(), reason="`fastai-cf train` has no --nproc option yet")
def test_cli_nproc(single, tmp_path):
    "`fastai-cf train --nproc 2 --epochs 2` works as written and matches the one-process run"
    r = _py('-c', 'import sys; from fastai_cf.cli import main; sys.exit(main())', 'train', '--nproc', 2, '--epochs', 2,
            '--out', tmp_path/'out', cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(o.name for o in (tmp_path/'out').iterdir()) == ['model.cf', 'weight_decay.png']
    assert r.stdout.count('final validation') == 1 and r.stdout.count('top 5 recommendations') == 1
    one = _mse(single[0])**0.5
    assert abs(_rmse(r.stdout) - one) <= 0.03 * one

def test_relaunch_carries_the_options():
    "`nproc=N` relaunches rebuild the command line: every option but `nproc` comes back as it was given"
    from fastai_cf.distributed import _argv, train_distrib
    from fastai_cf import cli
    for f,kw in ((train_distrib, dict(data='x.csv', epochs=3, lr=0.01, bs=512, grads='dense', nproc=4)),
                 (cli.train, dict(data='x.csv', epochs=3, wd=0.0, fast=False, debug=True, user='7'))):
        full = {k:p.default for k,p in inspect.signature(f).parameters.items()} | kw
        back = {k:v for k,v in vars(anno_parser(f).parse_args(_argv(f, full))).items() if k not in ('pdb', 'xtra')}
        assert back == {k:v for k,v in full.items() if k != 'nproc'} | ({'nproc': 1} if 'nproc' in back else {})

def test_errors_before_starting_processes(tmp_path, capsys):
    from fastai_cf.distributed import _main, launch_distrib, train_distrib
    assert _main(['--nproc', '2', '--data', str(tmp_path/'nope.csv')]) == 2      # checked here, no process started
    assert 'No such ratings file' in capsys.readouterr().err
    with pytest.raises(ValueError, match='epochs'): train_distrib(epochs=0)
    with pytest.raises(ValueError, match='nproc=0'): launch_distrib(0, [])

def test_trainer_needs_a_process_group():
    from fastai_cf.data import CFDataLoaders, synth_ratings
    from fastai_cf.learner import cf_learner
    import fastai_cf.distributed
    learn = cf_learner(CFDataLoaders.from_df(synth_ratings(50, 40, 800), seed=0, bs=64, device='cpu')).to_cf_distributed()
    threads = torch.get_num_threads()
    with pytest.raises(ValueError, match='process group'): learn.fit(1)
    torch.set_num_threads(threads)     # the failed fit skipped `TorchThreads.after_fit`
    learn.detach_cf_distributed()
    with learn.cf_distrib_ctx(): learn.fit(1)          # without a launcher, the block changes nothing
