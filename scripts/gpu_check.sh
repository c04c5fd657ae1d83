#!/usr/bin/env bash
# Issue 13's GPU measurement in one call on the device machine (prepare with
# scripts/gpu_pack.sh first):
#   run(command="bash scripts/gpu_check.sh", carry=[".whl", ".gpu"], timeout_s=480)
# `probe bench` on the embedded model's architecture (smollm2-135m, random weights: its GGUF
# is too large to carry) and on Llama-2-7B's (llama-7b), bfloat16, eager and sdpa rows, the
# share of the measured bf16 matmul rate and the full-BBQ x 4 conditions projection. Each
# result lands in $OUT as NAME.json / NAME.txt. Locally, on a CPU:
#   SKIP_WHEELS=1 PY=.venv/bin/python DEVICE=cpu RUN="smollm2" ITEMS=4 bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-artifacts/gpu}
mkdir -p "$OUT"
PY=${PY:-python3}
if [ -z "${SKIP_WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "${WHEELS:-.whl}"/*.whl || { echo "wheel install failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PROBE_SHAPE_TOKENIZER=$PWD/.gpu/tokenizer PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
ITEMS=${ITEMS:-64}
{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch, transformers, transformer_lens as tl, importlib.metadata as m
print('torch', torch.__version__, 'transformers', transformers.__version__,
      'transformer-lens', m.version('transformer-lens'),
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
bench() {
  local name=$1; shift
  timeout "${STEP_TIMEOUT:-300}" $PY -m probe.cli bench --device "$DEVICE" \
    --data-dir .gpu/data --no-memory --items "$ITEMS" --json "$OUT/$name.json" "$@" \
    > "$OUT/$name.txt" 2>&1
  echo "$name: rc=$?"
  grep -v "Loading weights" "$OUT/$name.txt" | tail -40
}
for name in ${RUN:-smollm2 llama7b}; do
  case $name in
    smollm2) bench smollm2 --shape smollm2-135m --batch-size 16 --new-tokens 32 ;;
    llama7b) bench llama7b --shape llama-7b --batch-size 16 --new-tokens 32 ;;
  esac
done
