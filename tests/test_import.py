"A clean first screen: importing fastai_cf and loading the bundled data warn nothing, and no module silences warnings globally"
import ast, os, subprocess, sys, warnings
from pathlib import Path
import pytest

pkg = Path(__file__).parent.parent/'fastai_cf'
_env = {**os.environ, 'PYTHONWARNINGS': ''}

def _run(code):
    return subprocess.run([sys.executable, '-W', 'error', '-c', code], capture_output=True, text=True, env=_env, timeout=300)

_after = """
import warnings
try: warnings.warn('`torch.jit.script` is deprecated', FutureWarning)
except FutureWarning: print('still raised')
"""

def test_import_all_warns_nothing():
    "`-W error` turns any warning raised while importing (fastai's included) into a failure; after the import, the same warning still reaches the user (the silencing was for that import alone)"
    r = _run('import fastai_cf.all' + _after)
    assert r.returncode == 0 and r.stderr == '', r.stderr[-3000:]
    assert r.stdout.strip() == 'still raised'

def test_from_movielens_warns_nothing():
    from fastai_cf.data import CFDataLoaders
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        dls = CFDataLoaders.from_movielens()
    assert len(dls.train.x) > 0
    assert not w, [f'{o.category.__name__}: {o.message}' for o in w]

def _modules():
    return sorted(o for o in pkg.rglob('*.py') if o.name not in ('__init__.py', '_modidx.py'))

def _is_fastai(node):
    if isinstance(node, ast.Import): return any(a.name.split('.')[0] == 'fastai' for a in node.names)
    return isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or '').split('.')[0] == 'fastai'

def _is_core(node, depth):
    "`from . import core`/`data`, `from .core import ...` (`..` from a subpackage): `data` imports `core` first"
    if not isinstance(node, ast.ImportFrom) or node.level != depth: return False
    return node.module in ('core', 'data') or (node.module is None and any(a.name in ('core', 'data') for a in node.names))

@pytest.mark.parametrize('fn', _modules(), ids=lambda o: str(o.relative_to(pkg)))
def test_core_imported_before_fastai(fn):
    "`core` imports fastai with fastai's own import-time notices silenced, so it must come first in every module"
    if fn.name == 'core.py': return
    body = ast.parse(fn.read_text()).body
    fa = next((i for i,o in enumerate(body) if _is_fastai(o)), None)
    if fa is None: return
    depth = len(fn.relative_to(pkg).parts)
    da = next((i for i,o in enumerate(body) if _is_core(o, depth)), None)
    assert da is not None and da < fa, f"{fn.relative_to(pkg)}: import `core` (or `data`) before fastai (line {body[fa].lineno})"

def _global_filters(tree):
    "Calls to `warnings.filterwarnings`/`simplefilter` that run at import, outside a `catch_warnings()` block"
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): continue
        if isinstance(stmt, ast.With) and any('catch_warnings' in ast.unparse(o.context_expr) for o in stmt.items): continue
        for o in ast.walk(stmt):
            if isinstance(o, ast.Call) and isinstance(o.func, ast.Attribute) and o.func.attr in ('filterwarnings', 'simplefilter'):
                yield o.lineno

@pytest.mark.parametrize('fn', _modules(), ids=lambda o: str(o.relative_to(pkg)))
def test_no_global_warning_filter(fn):
    "Importing a module must not change the user's warning filters"
    lines = list(_global_filters(ast.parse(fn.read_text())))
    assert not lines, f"{fn.relative_to(pkg)}: warning filter set at import, line(s) {lines}"

def test_checks_can_fail():
    "The two source checks above catch what they are for"
    bad = ast.parse("import warnings\nwarnings.filterwarnings('ignore', category=FutureWarning)\n"
                    "if __name__ == '__main__': warnings.simplefilter('ignore')\n"
                    "with warnings.catch_warnings(): warnings.simplefilter('ignore')\n"
                    "def f(): warnings.simplefilter('ignore')")
    assert list(_global_filters(bad)) == [2, 3]
    body = ast.parse("from fastai.learner import Learner\nfrom .data import CFDataLoaders").body
    assert _is_fastai(body[0]) and _is_core(body[1], 1) and not _is_core(body[1], 2)
