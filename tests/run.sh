#!/usr/bin/env bash
# Every test: the library in step with the notebooks, the notebooks' lesson cells, the docs build, then pytest.
# Run from an environment where the package is installed with its `dev` extra (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
snap() { find fastai_cf -name '*.py' -print0 | sort -z | xargs -0 sha256sum; }
before=$(snap)
nbdev-export
if [ "$before" != "$(snap)" ]; then
  echo "FAILED: nbdev-export changed the library: it was out of step with the notebooks in nbs/."
  echo "Run nbdev-export and commit the result."
  diff <(echo "$before") <(snap) || true
  exit 1
fi
echo "== nbdev-test (lesson cells in every notebook)"
nbdev-test
echo "== nbdev-proc-nbs (the docs build up to Quarto: each notebook's import and exported cells, in a fresh namespace)"
# The same function as `nbdev-proc-nbs --force` (every notebook, not only those changed since the last build: a
# library change can break an unchanged page), without its first step, offering to sudo-install Quarto when it is
# missing (no Quarto is needed to process the notebooks; the deploy workflow renders the site).
python -c "import nbdev.quarto as q; q._ensure_quarto = lambda: None; q.nbdev_proc_nbs(force=True)"
echo "== pytest"
python -m pytest tests "$@"
