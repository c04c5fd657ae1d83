#!/usr/bin/env bash
# Submit a probe run as a Slurm job array (one item shard per task, one GPU each),
# then a merge job that starts when every shard succeeded.
#
#   scripts/slurm_array.sh N OUT -- --model meta-llama/Llama-2-7b-chat-hf --benchmark bbq --cache-acts
#
# Task i runs `probe run ARGS --shard i/N --device cuda --out OUT/shard-i`; the merge job runs
# `probe merge OUT/shard-0 ... --out OUT/merged`. Logs go to OUT/logs/. Rerunning the same
# command resumes unfinished shards (finished ones return at once); remove OUT/merged first.
# Environment: SBATCH_OPTS  extra sbatch options for both jobs ("--partition=gpu --time=1-0")
#              GPUS_PER_TASK  GPUs per shard task (default 1)
#              PROBE        the probe command (default: probe; e.g. "/path/.venv/bin/probe")
set -euo pipefail

usage() {
  echo "usage: $0 N OUT -- PROBE_RUN_ARGS..." >&2
  exit 2
}
[[ $# -ge 3 && $3 == "--" && $1 =~ ^[1-9][0-9]*$ ]] || usage
n=$1
out=$2
shift 3
for arg in "$@"; do
  case $arg in
    --shard | --shard=* | --out | --out=* | --device | --device=*)
      echo "$0: do not pass $arg; this script sets it" >&2
      exit 2 ;;
  esac
done
probe=${PROBE:-probe}
mkdir -p "$out/logs"
out_q=$(printf '%q' "$out")
run_args=$(printf '%q ' "$@")
# shellcheck disable=SC2086  # SBATCH_OPTS is a list of options on purpose
array_id=$(sbatch --parsable ${SBATCH_OPTS:-} --job-name=probe-shard --array="0-$((n - 1))" \
  --gres="gpu:${GPUS_PER_TASK:-1}" --output="$out/logs/shard-%a.out" \
  --wrap="$probe run $run_args--shard \${SLURM_ARRAY_TASK_ID}/$n --device cuda --out $out_q/shard-\${SLURM_ARRAY_TASK_ID}")
array_id=${array_id%%;*}  # --parsable prints "id" or "id;cluster"
shards=""
for ((i = 0; i < n; i++)); do shards+="$out_q/shard-$i "; done
# shellcheck disable=SC2086
merge_id=$(sbatch --parsable ${SBATCH_OPTS:-} --job-name=probe-merge \
  --dependency="afterok:$array_id" --output="$out/logs/merge.out" \
  --wrap="$probe merge $shards--out $out_q/merged")
echo "shards: job $array_id (array 0-$((n - 1))); merge: job ${merge_id%%;*} after all succeed"
