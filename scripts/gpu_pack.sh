#!/usr/bin/env bash
# Prepare, on a machine with the project installed (`make install`), what
# scripts/gpu_check.sh needs on a GPU machine that reaches no network: wheels of the
# packages its image lacks (.whl/: transformer-lens and datasets' pieces, at the versions the
# tests here pass with), the embedded model's tokenizer and the BBQ files (.gpu/). Both
# folders are git-ignored; the device tool carries them (about 25 MB of its 64 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${PROBE_DATA_DIR:-../shared/data}
PYVER=${GPU_PYTHON_VERSION:-3.12}  # the GPU image's Python (docs/benchmarks.md)
if [ ! -d "$DATA/bbq" ]; then
  echo "no BBQ files in $DATA/bbq: set PROBE_DATA_DIR (probe data download fetches them)" >&2
  exit 2
fi
rm -rf .whl .gpu
mkdir -p .whl .gpu/data
# The installed versions: the ones this checkout's tests passed with.
pins=$($PY -c "from importlib.metadata import version as v
print(' '.join(f'{p}=={v(p)}' for p in ('transformer-lens', 'datasets', 'dill', 'multiprocess')))")
$PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl $pins
$PY - <<'PYEOF'
from transformers import AutoTokenizer

from probe.engine.models import embedded_dir

AutoTokenizer.from_pretrained(str(embedded_dir())).save_pretrained(".gpu/tokenizer")
PYEOF
cp -r "$DATA/bbq" .gpu/data/
echo "packed: $pins"
du -sh .whl .gpu
