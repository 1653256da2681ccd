#!/usr/bin/env bash
# The training experiments behind docs/RESULTS.md: dense vs routed, same seeds and epochs,
# over policies, keeps and codecs. Long (each MLP run is about a minute on 2 cores): run it by
# hand or from `make experiments`, never from CI.
#
#   scripts/experiments.sh [OUT_DIR] [SEEDS] [MODEL]
#   e.g. scripts/experiments.sh out/experiments "1 2 3" mlp
#   EXTRA_ARGS="--map-resolution neuron" TAG=neuron CONFIGS="sensitivity 10 int8" \
#     scripts/experiments.sh out/experiments "1 2 3" cnn   (extra flags; TAG goes in the names)
#
# Writes OUT_DIR/<model>_<policy>_<keep>_<codec>_s<seed>.json and .log, then the table and the
# Pareto plot through scripts/summarize_experiments.py.
set -euo pipefail
out=${1:-out/experiments}
seeds=${2:-1 2 3}
model=${3:-mlp}
bin=${SPARSELINK:-build/sparselink}
epochs=${EPOCHS:-5}
read -r -a extra_args <<<"${EXTRA_ARGS:-}"
if [[ ${#extra_args[@]} -gt 0 && -z ${TAG:-} ]]; then
  echo "experiments.sh: EXTRA_ARGS needs a TAG (runs are named, and skipped when done, by name)" >&2
  exit 1
fi
if [[ ${TAG:-} == *_* ]]; then
  echo "experiments.sh: TAG = $TAG: must not contain '_' (it separates the name's fields)" >&2
  exit 1
fi
tag=${TAG:+_$TAG}
mkdir -p "$out"

# policy keep codec
if [[ $model == mlp ]]; then
  configs=${CONFIGS:-"dense 100 fp32
sensitivity 10 int8
sensitivity 5 int8
sensitivity 3 int8
sensitivity 2 int8
magnitude 5 int8
random 5 int8
sensitivity 5 int4
structured 10 int8
sensitivity auto int8"}
else
  configs=${CONFIGS:-"dense 100 fp32
sensitivity 10 int8
sensitivity 5 int8
magnitude 5 int8
random 5 int8
structured 25 int8"}
fi

total=$(( $(echo "$configs" | wc -l) * $(echo $seeds | wc -w) ))
done_runs=0
start=$(date +%s)
while read -r policy keep codec; do
  for seed in $seeds; do
    name="${model}_${policy}_${keep}_${codec}${tag}_s${seed}"
    if [[ ! -f "$out/$name.json" ]]; then
      extra=("${extra_args[@]}")
      [[ $keep == auto ]] && extra+=(--link-budget "${LINK_BUDGET:-150000}")
      "$bin" train --model "$model" --policy "$policy" --keep "$keep" --codec "$codec" \
        --epochs "$epochs" --seed "$seed" "${extra[@]}" --report "$out/$name.json" >"$out/$name.log" 2>&1 ||
        echo "FAILED: $name (see $out/$name.log)"
    fi
    done_runs=$((done_runs + 1))
    elapsed=$(( $(date +%s) - start ))
    echo "[$done_runs/$total] $name  elapsed ${elapsed}s  eta $(( elapsed * (total - done_runs) / done_runs ))s"
  done
done <<<"$configs"
/usr/bin/python3 "$(dirname "$0")/summarize_experiments.py" "$out"
