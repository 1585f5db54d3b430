"README.md is kept in step with nbs/index.ipynb by hand (no Quarto here for `nbdev-readme`): its examples must be index's"
import json, re
from pathlib import Path

root = Path(__file__).parent.parent
_fence = re.compile(r'^```(\w*)\n(.*?)^```', re.M | re.S)

def _blocks(md):
    "Fenced code blocks of markdown text `md`, as (language, code) pairs in order"
    return [(lang, code) for lang, code in _fence.findall(md)]

def _index_md():
    nb = json.loads((root/'nbs'/'index.ipynb').read_text())
    return '\n\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')

def _cli_lines(blocks):
    "The command lines of the shell blocks, continuation lines joined"
    return [l for lang, code in blocks if lang == 'sh' for l in code.replace('\\\n', ' ').splitlines() if l.strip()]

def test_blocks_found():
    "The parser sees the README's Python example and its `fastai-cf` lines (so the comparisons below compare something)"
    blocks = _blocks((root/'README.md').read_text())
    py = [code for lang, code in blocks if lang == 'python']
    assert py and 'from fastai_cf.all import *' in py[0]
    cli = _cli_lines(blocks)
    assert any(l.startswith('fastai-cf train') for l in cli)
    assert any('tests/run.sh' in l for l in cli), "README's test command"

def test_python_example_is_index():
    readme, index = _blocks((root/'README.md').read_text()), _blocks(_index_md())
    assert [c for l, c in readme if l == 'python'] == [c for l, c in index if l == 'python'], \
        "README.md's Python example differs from nbs/index.ipynb's: copy the one from index.ipynb (README's source)"

def test_cli_lines_are_index():
    readme, index = _blocks((root/'README.md').read_text()), _blocks(_index_md())
    assert _cli_lines(readme) == _cli_lines(index), \
        "README.md's command lines differ from nbs/index.ipynb's: copy them from index.ipynb (README's source)"

def test_every_block_is_index():
    "Every fenced block, in order, whatever its language"
    assert _blocks((root/'README.md').read_text()) == _blocks(_index_md())
