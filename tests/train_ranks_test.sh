#!/usr/bin/env bash
# `sparselink train` with one stage per process: over Gloo (through `sparselink launch` and
# through hand-set torchrun variables) and over MPI (through mpiexec, when MPIEXEC is given).
# A run across processes must give the contracts, wire bytes and accuracy of the same run in one
# process; bad job variables fail with one line naming the variable; a rank that dies makes the
# others fail within their timeout instead of hanging.
set -u
bin=${SPARSELINK:?set SPARSELINK to the sparselink binary}
mpiexec=${MPIEXEC:-}
source "$(dirname "$0")/check_lib.sh"

need_train

small=(--epochs 1 --max-train-samples 1200 --batch 200 --micro-batches 2 --threads 1
       --negotiate-every 2 --timeout 60)

# The same run in one process and across processes: every field but the times must agree.
same_run() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def strip(r):
    return [{k: v for k, v in x.items() if "seconds" not in k} for x in r["boundaries"]]
assert strip(a) == strip(b), (strip(a), strip(b))
ea = [(e["loss"], e["test_accuracy"]) for e in a["epochs"]]
eb = [(e["loss"], e["test_accuracy"]) for e in b["epochs"]]
assert ea == eb, (ea, eb)
PY
}

for schedule in gpipe 1f1b; do
  "$bin" train --stages 3 "${small[@]}" --schedule "$schedule" --report "$work/one_$schedule.json" \
    >"$work/out" 2>"$work/err" || fail "inprocess $schedule: $(tail -2 "$work/err")"
  if "$bin" launch -n 3 -- train --transport gloo --stages 3 "${small[@]}" --schedule "$schedule" \
       --report "$work/gloo_$schedule.json" >"$work/out" 2>"$work/err"; then
    same_run "$work/one_$schedule.json" "$work/gloo_$schedule.json" && pass ||
      fail "gloo $schedule differs from one process"
    grep -q "pipeline: 3 ranks over gloo, $schedule" "$work/out" && pass ||
      fail "gloo $schedule: no pipeline line: $(tail -2 "$work/out")"
  else
    fail "launch gloo $schedule: $(tail -3 "$work/err")"
  fi
done

if [[ -n "$mpiexec" ]]; then
  if "$mpiexec" -n 3 --allow-run-as-root --oversubscribe --bind-to none --mca pml ob1 \
       --mca btl tcp,self "$bin" train --transport mpi --stages 3 "${small[@]}" --schedule 1f1b \
       --report "$work/mpi.json" >"$work/out" 2>"$work/err"; then
    same_run "$work/one_1f1b.json" "$work/mpi.json" && pass || fail "mpi differs from one process"
  else
    fail "mpiexec train --transport mpi: $(tail -3 "$work/err")"
  fi
fi

# Checkpoints across ranks: every rank writes its own file; a job stopped after epoch 1 and
# resumed ends as the job never stopped (the report apart from the times), and a resume
# refuses, on every rank, a missing rank file, files of two epochs or one process's files.
ck=(--stages 2 --epochs 2 --max-train-samples 600 --batch 200 --micro-batches 2 --threads 1
    --negotiate-every 2 --timeout 60)
if "$bin" launch -n 2 -- train --transport gloo "${ck[@]}" --report "$work/ck_whole.json" \
     >"$work/out" 2>"$work/err" &&
   "$bin" launch -n 2 -- train --transport gloo "${ck[@]}" --checkpoint "$work/ck" \
     --stop-after 1 --report "$work/ck_stopped.json" >"$work/out" 2>"$work/err" &&
   cp "$work/ck/rank-1.ckpt" "$work/ck_epoch1_rank1" &&
   "$bin" launch -n 2 -- train --transport gloo "${ck[@]}" --resume "$work/ck" \
     --checkpoint "$work/ck" --report "$work/ck_resumed.json" >"$work/out" 2>"$work/err"; then
  /usr/bin/python3 - "$work/ck_whole.json" "$work/ck_resumed.json" <<'PY' && pass || fail "gloo resumed differs from the job never stopped"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for r in (a, b):
    # Times, and bytes sent, count this invocation only.
    r.pop("time"); r["pipeline"] = {k: v for k, v in r["pipeline"].items()
                                    if "seconds" not in k and "idle" not in k and k != "sent_bytes"}
    for e in r["epochs"]:
        e.pop("seconds"); e.pop("samples_per_s")
    for x in r["boundaries"]:
        x.pop("route_seconds"); x.pop("route_seconds_by_phase")
assert a == b, "reports differ"
assert len(a["epochs"]) == 2
PY
  [[ -f "$work/ck/rank-0.ckpt" && -f "$work/ck/rank-1.ckpt" ]] && pass || fail "a rank file is missing"
  cp "$work/ck_epoch1_rank1" "$work/ck/rank-1.ckpt"
  expect_error resume_two_epochs "rank 0 after epoch 2, rank 1 after epoch 1" \
    "$bin" launch -n 2 -- train --transport gloo "${ck[@]}" --resume "$work/ck"
  (( $(grep -o "different epochs" "$work/err" | wc -l) == 2 )) && pass ||
    fail "both ranks should refuse files of two epochs: $(cat "$work/err")"
  expect_error resume_in_one_process "rank-0.ckpt: written by rank 0 of 2, this is rank 0 of 1" \
    "$bin" train "${ck[@]}" --resume "$work/ck"
  rm "$work/ck/rank-1.ckpt"
  expect_error resume_missing_rank "rank-1.ckpt: missing" \
    "$bin" launch -n 2 -- train --transport gloo "${ck[@]}" --resume "$work/ck"
else
  fail "gloo checkpoint runs: $(tail -3 "$work/err")"
fi

# Bad job variables and flags: one line naming the variable or flag, before any training.
expect_error world_not_stages "world size = 2: must equal --stages = 3" \
  "$bin" launch -n 2 -- train --transport gloo --stages 3 "${small[@]}"
expect_error rank_alone "RANK and WORLD_SIZE: set both" \
  env RANK=0 "$bin" train --transport gloo --stages 2 "${small[@]}"
expect_error rank_too_big "RANK = 5: must be < the world size 2" \
  env RANK=5 WORLD_SIZE=2 "$bin" train --transport gloo --stages 2 "${small[@]}"
expect_error bad_port "MASTER_PORT = abc" \
  env RANK=0 WORLD_SIZE=2 MASTER_PORT=abc "$bin" train --transport gloo --stages 2 "${small[@]}"
expect_error bad_schedule "--schedule = zigzag" "$bin" train --schedule zigzag "${small[@]}"
expect_error bad_timeout "--timeout = 0" "$bin" train --timeout 0 --epochs 1
expect_error bad_transport "--transport" "$bin" train --transport carrier-pigeon "${small[@]}"
expect_error launch_no_command "COMMAND is required" "$bin" launch -n 2
expect_error launch_zero_ranks "ranks" "$bin" launch -n 0 -- train

# A rank that never comes: rank 0 waits for it at the rendezvous, then fails naming the wait.
start=$(date +%s)
expect_error missing_rank "rank 0 of 2|timed out|Timed out|timeout" timeout 60 \
  env RANK=0 WORLD_SIZE=2 MASTER_PORT=29611 "$bin" train --transport gloo --stages 2 \
  "${small[@]}" --timeout 4
(( $(date +%s) - start <= 30 )) && pass || fail "missing_rank took $(( $(date +%s) - start )) s"

# A rank killed in the middle of training: the survivor fails within its timeout and a few
# seconds, naming the rank and what it waited for; launch passes the failure on.
port=29613
env RANK=0 WORLD_SIZE=2 MASTER_PORT=$port "$bin" train --transport gloo --stages 2 --epochs 50 \
  --max-train-samples 2000 --threads 1 --timeout 5 >"$work/r0.out" 2>"$work/r0.err" &
r0=$!
env RANK=1 WORLD_SIZE=2 MASTER_PORT=$port "$bin" train --transport gloo --stages 2 --epochs 50 \
  --max-train-samples 2000 --threads 1 --timeout 5 >"$work/r1.out" 2>"$work/r1.err" &
r1=$!
# Killed once training runs (rank 0 prints its first epoch line), or after 20 s at most.
for _ in $(seq 200); do
  grep -q "^epoch" "$work/r0.out" 2>/dev/null && break
  sleep 0.1
done
kill -9 $r1
wait $r1 2>/dev/null
killed=$(date +%s)
( sleep 40; kill -9 $r0 2>/dev/null ) &
watchdog=$!
wait $r0
rc=$?
kill $watchdog 2>/dev/null
waited=$(( $(date +%s) - killed ))
if [[ $rc -eq 0 || $rc -ge 128 ]]; then
  fail "survivor of a killed peer: exit $rc after $waited s: $(tail -2 "$work/r0.err")"
elif (( waited > 15 )); then
  fail "survivor of a killed peer took $waited s (timeout 5 s)"
elif ! grep -q "rank 0 of 2" "$work/r0.err"; then
  fail "survivor's error does not name its rank: $(tail -2 "$work/r0.err")"
else
  pass
fi
echo "survivor said: $(tail -1 "$work/r0.err")"

finish
