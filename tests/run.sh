#!/usr/bin/env bash
# Every test: the library in step with the notebooks, the notebooks' lesson cells, then pytest.
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
echo "== pytest"
python -m pytest tests "$@"
