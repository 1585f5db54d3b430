"How the package is built: no import circle between its modules, and no needless cold-start cost"
import ast, subprocess, sys
from pathlib import Path
import fastai_cf

PKG = Path(fastai_cf.__file__).parent

def _module(fn):
    "Dotted name of the package module in `fn`"
    parts = fn.relative_to(PKG.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)

def _imports(fn):
    "Package modules that the module in `fn` imports anywhere in its code (module level or inside functions)"
    name = _module(fn)
    pkg = name if fn.name == '__init__.py' else name.rpartition('.')[0]
    res = set()
    for node in ast.walk(ast.parse(fn.read_text())):
        if isinstance(node, ast.Import): res |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                up = pkg.split('.')[:len(pkg.split('.')) - node.level + 1]
                base = '.'.join(up + ([base] if base else []))
            res.add(base)
            res |= {f'{base}.{a.name}' for a in node.names}    # `from . import data` imports a module
    return res

def import_graph():
    "`{module: package modules it imports}` for every module of fastai_cf (the hand-written `all.py` included)"
    fns = {_module(fn): fn for fn in PKG.rglob('*.py')}
    return {m: {o for o in _imports(fn) if o in fns and o != m} for m,fn in fns.items()}

def find_cycle(graph):
    "One import circle of `graph` as a list of modules (first == last), or `None`"
    state,stack = {},[]
    def visit(m):
        state[m] = 'open'; stack.append(m)
        for o in sorted(graph[m]):
            if state.get(o) == 'open': return stack[stack.index(o):] + [o]
            if o not in state and (c := visit(o)): return c
        state[m] = 'done'; stack.pop()
    for m in sorted(graph):
        if m not in state and (c := visit(m)): return c

def test_find_cycle_finds_one():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': set()}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None

def test_graph_sees_relative_and_lazy_imports():
    g = import_graph()
    assert 'fastai_cf.data' in g['fastai_cf.learner']
    assert 'fastai_cf.optimizer' in g['fastai_cf.callback.wd']     # `from ..optimizer import ...`

def test_no_import_circle():
    c = find_cycle(import_graph())
    assert c is None, 'import circle: ' + ' -> '.join(c)

def test_distributed_does_not_import_cli():
    assert 'fastai_cf.cli' not in import_graph()['fastai_cf.distributed']

FIT = '''
import sys, warnings; warnings.filterwarnings('ignore')
import torch
from fastai_cf.optimizer import LazyAdam
e = torch.nn.Embedding(10, 3, sparse=True)
opt = LazyAdam(e.parameters(), lr=0.1, wd=0.1)
e(torch.tensor([1, 2])).sum().backward(); opt.step(); opt.zero_grad()
sd = opt.state_dict(); opt.load_state_dict(sd); opt.opt.flush()
print('torch._dynamo' in sys.modules)
'''

def test_lazy_adam_does_not_import_dynamo():
    "A `torch.optim.Optimizer` imports `torch._dynamo` (~2 s) on its first method call; `RowAdam` must not"
    r = subprocess.run([sys.executable, '-c', FIT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == 'False'

def test_public_names_stay_where_users_import_them():
    "Moving the job, the progress callback and the DDP machinery into their own modules changed no import path"
    import fastai_cf.cli as cli, fastai_cf.distributed as distributed, fastai_cf.all as all_
    from fastai_cf.callback.progress import PlainProgress
    from fastai_cf.job import train, launch_train
    assert cli.PlainProgress is PlainProgress and cli.train is train and distributed.launch_train is launch_train
    assert set(cli.__all__) == {'PlainProgress', 'train', 'recommend', 'similar', 'sweep_wd', 'main'}
    assert set(distributed.__all__) == {'setup_cf_distrib', 'CFDistributedDL', 'CFDistributedTrainer', 'launch_distrib', 'launch_train', 'train_distrib'}
    assert all(hasattr(all_, n) for n in distributed.__all__)
    assert hasattr(distributed, '_argv') and hasattr(distributed, '_main')   # what tests and `python -m` use

# The public names of each module and of `fastai_cf.all` before the catalogue and `core` moved out of `data` (commit 86343bd)
NAMES_BEFORE = {'cli': ['PlainProgress', 'main', 'recommend', 'similar', 'sweep_wd', 'train'],
 'data': ['CFDataLoader', 'CFDataLoaders', 'CFDataset', 'MOVIELENS', 'atomic_write', 'cf_splits', 'check_file',
          'check_ratings', 'default_bs', 'load_movielens', 'movielens_path', 'read_ratings_csv', 'synth_ratings'],
 'ddp': ['CFDistributedDL', 'CFDistributedTrainer', 'launch_distrib', 'setup_cf_distrib'],
 'distributed': ['CFDistributedDL', 'CFDistributedTrainer', 'launch_distrib', 'launch_train', 'setup_cf_distrib',
                 'train_distrib'],
 'inference': ['CFModelFileError', 'FOLD_IN_REG', 'load_cf', 'save_cf'],
 'interpret': ['CollabInterpretation'],
 'job': ['launch_train', 'train'],
 'learner': ['CF_BIAS_REG', 'CF_BIAS_START', 'CF_KNOWN_START', 'CF_KNOWN_USER', 'CF_LR', 'CF_WD_EPOCH', 'TorchThreads',
             'baseline_biases', 'cf_learner', 'default_wd', 'default_y_range', 'init_biases'],
 'metrics': ['cross_validate', 'cv_folds', 'evaluate', 'ml100k_folds', 'ranking_metrics'],
 'modelfile': ['CFModelFileError', 'load_cf', 'save_cf'],
 'models': ['DotProduct', 'DotProductBias', 'emb_sz_rule', 'suggest_n_factors'],
 'optimizer': ['LazyAdam', 'LazyDecay', 'RowAdam']}
ALL_BEFORE = ['CFDataLoader', 'CFDataLoaders', 'CFDataset', 'CFDistributedDL', 'CFDistributedTrainer', 'CFModelFileError',
 'CF_BIAS_REG', 'CF_BIAS_START', 'CF_KNOWN_START', 'CF_KNOWN_USER', 'CF_LR', 'CF_WD_EPOCH', 'CollabInterpretation',
 'DotProduct', 'DotProductBias', 'FOLD_IN_REG', 'LazyAdam', 'LazyDecay', 'MOVIELENS', 'RowAdam', 'TorchThreads',
 'atomic_write', 'baseline_biases', 'cf_learner', 'cf_splits', 'check_file', 'check_ratings', 'cross_validate',
 'cv_folds', 'default_bs', 'default_wd', 'default_y_range', 'emb_sz_rule', 'evaluate', 'init_biases', 'launch_distrib',
 'launch_train', 'load_cf', 'load_movielens', 'ml100k_folds', 'movielens_path', 'ranking_metrics', 'read_ratings_csv',
 'save_cf', 'setup_cf_distrib', 'suggest_n_factors', 'synth_ratings', 'train_distrib']

def test_names_before_the_split_still_import():
    "Every public name works from where users imported it before `movielens` and `core` split off `data`, as the same object"
    import importlib, fastai_cf.all as all_
    missing = [f'{m}.{n}' for m,ns in NAMES_BEFORE.items() for n in ns if not hasattr(importlib.import_module(f'fastai_cf.{m}'), n)]
    assert not missing, missing
    assert not [n for n in ALL_BEFORE if not hasattr(all_, n)]
    import fastai_cf.data as data, fastai_cf.movielens as ml, fastai_cf.core as core
    assert data.load_movielens is ml.load_movielens and data.MOVIELENS is ml.MOVIELENS and data.atomic_write is core.atomic_write
    assert {'MOVIELENS', 'load_movielens', 'movielens_path', 'check_file', 'atomic_write'} <= set(data.__all__)   # `from fastai_cf.data import *` too
