#!/usr/bin/env bash
# End-to-end checks of the sparselink command: help, version, demo, inspect, and bad input.
# Every bad input must give one clear line on stderr and a non-zero exit, never a crash.
set -u
bin=${SPARSELINK:?set SPARSELINK to the sparselink binary}
source "$(dirname "$0")/check_lib.sh"

expect_ok help "$bin" --help
grep -q inspect "$work/out" || fail "help lists inspect"
expect_ok version "$bin" --version
grep -qE '^sparselink [0-9]+\.[0-9]+\.[0-9]+' "$work/out" || fail "version line: $(cat "$work/out")"

expect_ok demo "$bin" demo --steps 40 --rows 16 --cols 256 --negotiate-every 10 --out "$work/demo"
grep -q "ratio" "$work/out" || fail "demo prints the traffic ratio"
expect_ok demo_shared_budget "$bin" demo --steps 40 --rows 16 --cols 256 --negotiate-every 10 \
  --link-budget 20000 --out "$work/demo2"

packet="$work/demo/boundary0.packet"
expect_ok inspect "$bin" inspect "$packet"
grep -q "checksum" "$work/out" || fail "inspect shows the checksum"
expect_ok inspect_json "$bin" inspect --json "$packet"
python3 -c "import json,sys; json.load(open('$work/out'))" 2>/dev/null || fail "inspect --json is JSON"

head -c 40 "$packet" >"$work/truncated.packet"
expect_error inspect_truncated "truncated.packet" "$bin" inspect "$work/truncated.packet"
cp "$packet" "$work/flipped.packet"
size=$(stat -c %s "$packet")
printf '\xff' | dd of="$work/flipped.packet" bs=1 seek=$((size / 2)) conv=notrunc status=none
expect_error inspect_corrupt "flipped.packet" "$bin" inspect "$work/flipped.packet"
expect_error inspect_missing "no-such-file" "$bin" inspect "$work/no-such-file"
: >"$work/empty.packet"
expect_error inspect_empty "empty.packet" "$bin" inspect "$work/empty.packet"
expect_error inspect_directory "$work" "$bin" inspect "$work"

# bench: one small case on one thread and on two, every baseline measured in the same run, the
# JSON of the issue; the two-thread case also times itself on one thread.
expect_ok bench_quick "$bin" bench --quick --min-time 0.01 --rounds 1 --json "$work/bench.json"
grep -q "fast/memcpy" "$work/out" || fail "bench prints the ratio table"
/usr/bin/python3 - "$work/bench.json" <<'PY' || fail "bench JSON has one entry per case with every method"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["machine"]["simd_target"]
(case, two) = j["cases"]
assert case["rows"] == 64 and case["cols"] == 1024 and case["keep"] == 0.1 and case["threads"] == 1
for m in ("fast", "fast_decode", "reference", "nth_element", "memcpy", "read"):
    assert case["gbps"][m] > 0, m
assert case["ratios"]["fast_vs_memcpy"] > 0 and case["wire_bytes"] < case["dense_bytes"]
assert "speedup_over_one_thread" not in case and "fast_one_thread" not in case["gbps"]
assert two["threads"] == 2 and two["wire_bytes"] == case["wire_bytes"]
for m in ("fast", "fast_decode", "read"):
    assert two["gbps"][m + "_one_thread"] > 0, m
    assert two["speedup_over_one_thread"][m] > 0, m
PY
grep -q "2 threads vs 1, alternating rounds: fast " "$work/out" || fail "bench prints the speed-ups"
# The plot of make bench, from that JSON (where matplotlib is installed); a bad file is named.
plot_bench="$(dirname "$0")/../scripts/plot_bench.py"
if /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  expect_ok bench_plot /usr/bin/python3 "$plot_bench" "$work/bench.json" "$work/bench.png"
  [[ -s "$work/bench.png" ]] || fail "plot_bench.py writes the PNG"
  echo '{"cases": [' >"$work/bad.json"
  expect_error bench_plot_bad_json "plot_bench.py: $work/bad.json" \
    /usr/bin/python3 "$plot_bench" "$work/bad.json" "$work/bad.png"
fi
expect_error bench_bad_what "WHAT: route not in|WHAT.*not in" "$bin" bench sideways
expect_error bench_bad_json "--json $work/no/such/dir/b.json: cannot open" \
  "$bin" bench --quick --min-time 0.01 --rounds 1 --json "$work/no/such/dir/b.json"
expect_error bench_bad_rounds "rounds" "$bin" bench --rounds 0
expect_error bench_bad_case "--case = 99: must be 1..9" "$bin" bench --case 99
expect_error bench_negative_case "--case = -1: must be" "$bin" bench --case -1

expect_error bench_bad_simd "--simd: avx512 not in" "$bin" bench --simd avx512 --quick
# A capped instruction set is the one the table names. A CPU without AVX2 (as Highway counts
# it) skips; bench says so and exits 1.
"$bin" bench --quick --min-time 0.02 --rounds 3 --simd avx2 --json "$work/avx2.json" \
  >"$work/out" 2>"$work/err"
rc=$?
if [[ $rc -ne 0 ]] && grep -q "cannot run it" "$work/err"; then
  echo "skip: this CPU has no AVX2 kernels"
elif [[ $rc -ne 0 ]]; then
  fail "bench --simd avx2: exit $rc $(head -3 "$work/err")"
else
  grep -q "AVX2 kernels" "$work/out" && pass || fail "bench --simd avx2 runs the AVX2 kernels"
  # Highway's own AVX2 compress rebuilt its table at every call: the fast route then ran at
  # 1.2x nth_element (4-8x after the fix). A ratio in one process, far from both; not under
  # sanitizers, which slow the two sides differently.
  if [[ ${SPARSELINK_TIMING_CHECKS:-1} == 1 ]]; then
    # Under a loaded 2-core CI machine the ratio fell to 2x once; 1.5x still separates the
    # two, and one re-run absorbs a neighbour test's burst.
    avx2_fast_enough() {
      /usr/bin/python3 - "$work/avx2.json" <<'PY'
import json, sys
g = json.load(open(sys.argv[1]))["cases"][0]["gbps"]
assert g["fast"] >= 1.5 * g["nth_element"], g
PY
    }
    if avx2_fast_enough 2>/dev/null; then
      pass
    else
      "$bin" bench --quick --min-time 0.05 --rounds 5 --simd avx2 --json "$work/avx2.json" \
        >"$work/out" 2>"$work/err"
      avx2_fast_enough && pass || fail "AVX2 route is at least 1.5x nth_element"
    fi
  fi
fi

# NaN slips past CLI11's ranges (every comparison with it is false): refused by name.
expect_error bench_nan_min_time "--min-time = nan" "$bin" bench --min-time nan --quick
expect_error demo_nan_budget "--link-budget = nan" "$bin" demo --link-budget nan --out "$work/x"
expect_error demo_huge_shape "--rows \* --cols = 68719476736" "$bin" demo --rows 65536 --cols 1048576 --out "$work/x"
expect_error demo_unwritable_out "--out = /proc/nope" "$bin" demo --steps 1 --out /proc/nope
# A budget below the floor: the demo says its negotiations were refused, and the contracts
# fall to the floor instead of keeping their starting keep.
expect_ok demo_tiny_budget "$bin" demo --steps 40 --rows 16 --cols 256 --negotiate-every 10 \
  --link-budget 2000 --out "$work/demo_tiny"
grep -q "negotiations refused" "$work/out" && pass || fail "demo_tiny_budget: no refusal reported"
grep -q "keep=2.00%" "$work/out" && pass || fail "demo_tiny_budget: contracts not at the floor: $(grep -m1 keep "$work/out")"
expect_error unknown_flag "--frobnicate" "$bin" demo --frobnicate
expect_error no_subcommand "subcommand" "$bin"
expect_error demo_bad_codec "codec = fp7" "$bin" demo --codec fp7 --out "$work/x"
expect_error demo_bad_bandwidth "bandwidth = fast" "$bin" demo --link-bandwidth fast --out "$work/x"
expect_error demo_zero_steps "steps" "$bin" demo --steps 0
expect_error demo_negative_budget "link-budget" "$bin" demo --link-budget -5

# train: only when the binary was built with LibTorch. Every bad flag fails before any work
# and leaves no report behind.
if "$bin" --help 2>/dev/null | grep -qE "^  train( |$)"; then
  report="$work/train/report.json"
  expect_error train_unknown_model "model" "$bin" train --model resnet --report "$report"
  expect_error train_unknown_policy "policy" "$bin" train --policy smart --report "$report"
  expect_error train_keep_zero "--keep = 0" "$bin" train --keep 0 --report "$report"
  expect_error train_keep_150 "--keep = 150" "$bin" train --keep 150% --report "$report"
  expect_error train_keep_garbage "--keep = lots" "$bin" train --keep lots --report "$report"
  expect_error train_too_many_stages "stages = 9" "$bin" train --stages 9 --report "$report"
  expect_error train_bad_codec "codec = fp7" "$bin" train --codec fp7 --report "$report"
  expect_error train_bad_gradient_codec "--gradient-codec = q2" "$bin" train --gradient-codec q2 --report "$report"
  expect_error train_bad_bandwidth "bandwidth = slow" "$bin" train --link-bandwidth slow --report "$report"
  expect_error train_negative_eps "--eps = -1: must be >= 0" "$bin" train --eps -1 --report "$report"
  expect_error train_bad_map_resolution "--map-resolution = pixel: must be channel or neuron" \
    "$bin" train --map-resolution pixel --report "$report"
  expect_error train_dense_link_loss "--link-loss = 0.1: the dense policy sends no packets" \
    "$bin" train --policy dense --link-loss 0.1 --report "$report"
  # An unusable --plot fails before training (the run would take a while, then fail).
  expect_error train_unwritable_plot "--plot = /proc/nope/plots" "$bin" train --epochs 1 \
    --max-train-samples 500 --stages 2 --plot /proc/nope/plots --report "$report"
  expect_error train_unwritable_report "--report = /proc/nope/r.json" "$bin" train --report /proc/nope/r.json
  expect_error train_report_is_directory "is a directory" "$bin" train --report "$work"
  mkdir -p "$work/badset"
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    printf 'not gzip' >"$work/badset/$f.gz"
  done
  expect_error train_missing_dataset "apt-get install dataset-fashion-mnist" \
    "$bin" train --data "$work/nodata" --report "$report"
  expect_error train_corrupt_dataset "train-images-idx3-ubyte.gz" \
    "$bin" train --data "$work/badset" --report "$report"
  [[ -e "$report" ]] && fail "a failed train left a report behind"
  # A tiny real run: the report is complete JSON with the documented fields.
  if [[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]]; then
    expect_ok train_tiny "$bin" train --epochs 1 --max-train-samples 2000 --stages 2 \
      --keep 10 --report "$report"
    /usr/bin/python3 - "$report" <<'PY' || fail "train report fields"
import json, sys
r = json.load(open(sys.argv[1]))
assert 0 <= r["final"]["test_accuracy"] <= 1
assert r["traffic"]["wire_bytes"] > 0 and r["traffic"]["dense_fp32_bytes"] > r["traffic"]["wire_bytes"]
assert len(r["boundaries"]) == 1 and r["boundaries"][0]["contract"]["keep"] == 0.1
assert len(r["epochs"]) == 1 and "modelled_link_seconds" in r["time"]
assert r["config"]["eps"] == 0.001 and r["config"]["map_resolution"] == "channel"  # mlp defaults
# The phases split route_seconds: every one ran, and they add up to it.
t = r["time"]
phases = t["route_seconds_by_phase"]
assert set(phases) == {"route_encode", "forward_link_decode", "summary", "gradient_encode",
                       "backward_link_decode", "map_update"}
assert all(v > 0 for v in phases.values()), phases
assert abs(sum(phases.values()) - t["route_seconds"]) <= 1e-6 * t["route_seconds"] + 1e-9
b = r["boundaries"][0]
assert abs(sum(b["route_seconds_by_phase"].values()) - b["route_seconds"]) <= 1e-6 * b["route_seconds"] + 1e-9
# When OPENBLAS_CORETYPE chose the kernels, the report says so and OpenBLAS runs them.
forced = r["config"]["openblas_coretype"]
assert forced is None or forced.lower() in r["config"]["blas"].lower(), r["config"]
PY
    # OPENBLAS_CORETYPE set or unset: the report names it, or null.
    for core in "" Haswell; do
      env -u OPENBLAS_CORETYPE ${core:+OPENBLAS_CORETYPE=$core} "$bin" train --epochs 1 \
        --max-train-samples 500 --stages 2 --keep 10 --report "$work/core.json" >/dev/null 2>&1 \
        || fail "train with OPENBLAS_CORETYPE='$core'"
      /usr/bin/python3 - "$work/core.json" "$core" <<'PY' && pass || fail "openblas_coretype '$core'"
import json, sys
c = json.load(open(sys.argv[1]))["config"]
want = sys.argv[2] or None
assert c["openblas_coretype"] == want, c
assert want is None or want in c["blas"], c
PY
    done
    # Determinism: the same seed, flags and thread count give the same accuracy, bytes and
    # contract history (times aside).
    expect_ok train_tiny_again "$bin" train --epochs 1 --max-train-samples 2000 --stages 2 \
      --keep auto --link-budget 60000 --negotiate-every 5 --report "$work/a.json"
    expect_ok train_tiny_same_seed "$bin" train --epochs 1 --max-train-samples 2000 --stages 2 \
      --keep auto --link-budget 60000 --negotiate-every 5 --report "$work/b.json"
    # The routing kernels give the same bits on every instruction set: a run on the SSE4
    # kernels (4 lanes, the compress table) is the same run.
    sse4=()
    if "$bin" train --epochs 1 --max-train-samples 2000 --stages 2 --keep auto \
      --link-budget 60000 --negotiate-every 5 --simd sse4 --report "$work/c.json" >"$work/out" 2>"$work/err"; then
      grep -q "SSE4 routing kernels" "$work/out" && pass || fail "train --simd sse4 runs the SSE4 kernels"
      sse4=("$work/c.json")
    elif grep -q "this CPU cannot run it" "$work/err"; then
      echo "skip: this CPU has no SSE4 kernels"
    else
      fail "train --simd sse4: $(head -3 "$work/err")"
    fi
    /usr/bin/python3 - "$work/a.json" "$work/b.json" "${sse4[@]}" <<'PY' || fail "same seed, same report"
import json, sys
a, b, *more = (json.load(open(p)) for p in sys.argv[1:])
for r in (a, b, *more):
    r.pop("time")
    r["config"].pop("simd_target")
    for e in r["epochs"]:
        e.pop("seconds"); e.pop("samples_per_s")
    for x in r["boundaries"]:
        x.pop("route_seconds"); x.pop("route_seconds_by_phase")
assert a == b, "reports differ"
assert all(r == a for r in more), "the SSE4 kernels' run differs"
assert len(a["boundaries"][0]["history"]) == 3  # 16 steps, every 5
PY
    expect_error train_bad_simd "--simd: avx512 not in" "$bin" train --simd avx512 --report "$report"
    # Link faults: with one packet in a hundred corrupted, every bad packet is caught by its
    # checksum and re-sent, so the run is the fault-free run (same seed) apart from the
    # retransmits, which count as traffic.
    expect_error train_bad_link_loss "--link-loss = 1: must be a probability" \
      "$bin" train --link-loss 1 --report "$report"
    expect_error train_nan_link_corrupt "--link-corrupt = nan" \
      "$bin" train --link-corrupt nan --report "$report"
    expect_error train_negative_link_corrupt "--link-corrupt = -0.1" \
      "$bin" train --link-corrupt -0.1 --report "$report"
    expect_error train_zero_link_tries "--link-tries = 0" \
      "$bin" train --link-tries 0 --report "$report"
    expect_error train_micro_batches_over_batch "--micro-batches = 200: must be in \[1, --batch = 128\]" \
      "$bin" train --micro-batches 200 --report "$report"
    # Micro-batches: each of the 16 steps (2000 samples, batch 128) crosses the boundary as
    # 4 micro-batches, each with its activation and gradient packet; steps 0 and 10 add one
    # summary each (from their first micro-batch).
    expect_ok train_micro_batches "$bin" train --epochs 1 --max-train-samples 2000 --stages 2 \
      --micro-batches 4 --report "$work/micro.json"
    /usr/bin/python3 - "$work/micro.json" <<'PY' || fail "micro-batch report"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["config"]["micro_batches"] == 4 and r["config"]["batch"] == 128
b = r["boundaries"][0]
assert b["packets"] == 16 * 4 * 2 + 2, b["packets"]
assert b["dense_fp32_bytes"] == 2 * 2000 * 1024 * 4, b["dense_fp32_bytes"]
PY
    faulty=(--epochs 1 --max-train-samples 2000 --stages 4 --batch 32 --keep auto
            --link-budget 60000 --negotiate-every 5)
    expect_ok train_clean "$bin" train "${faulty[@]}" --report "$work/clean.json"
    expect_ok train_corrupt "$bin" train "${faulty[@]}" --link-corrupt 0.01 \
      --report "$work/corrupt.json"
    grep -q "link faults: " "$work/out" || fail "train prints the link faults line"
    /usr/bin/python3 - "$work/clean.json" "$work/corrupt.json" <<'PY' || fail "corrupt = clean"
import json, sys
clean, corrupt = (json.load(open(p)) for p in sys.argv[1:3])
t = corrupt["traffic"]
assert t["retransmits"] > 0 and t["retransmits"] == t["corrupt_packets"] + t["lost_packets"]
assert t["lost_packets"] == 0 and clean["traffic"]["retransmits"] == 0
assert t["wire_bytes"] == clean["traffic"]["wire_bytes"] + t["retransmit_wire_bytes"]
assert corrupt["final"] == clean["final"], (corrupt["final"], clean["final"])
for c, d in zip(clean["epochs"], corrupt["epochs"]):
    assert c["loss"] == d["loss"] and c["test_accuracy"] == d["test_accuracy"]
assert len(clean["boundaries"]) == len(corrupt["boundaries"]) == 3
for c, d in zip(clean["boundaries"], corrupt["boundaries"]):
    assert c["history"] == d["history"] and c["contract"] == d["contract"]
    assert c["packets"] == d["packets"] and c["sensitivity"] == d["sensitivity"]
print("link faults: %d corrupt packets detected, %d retransmits (%d bytes), test accuracy %.4f both"
    % (t["corrupt_packets"], t["retransmits"], t["retransmit_wire_bytes"],
       clean["final"]["test_accuracy"]))
PY
    # Checkpoints: a run stopped after epoch 1 (as if killed) and resumed from its checkpoint
    # ends as the run never stopped: the same report apart from the times.
    ckpt=(--epochs 2 --max-train-samples 600 --batch 200 --stages 2 --keep auto
          --link-budget 60000 --negotiate-every 2)
    expect_ok train_uninterrupted "$bin" train "${ckpt[@]}" --report "$work/whole.json"
    expect_ok train_stop_after "$bin" train "${ckpt[@]}" --checkpoint "$work/ckpt" --stop-after 1 \
      --report "$work/stopped.json"
    grep -q "stopped after epoch 1 (--stop-after)" "$work/out" && pass || fail "no stop line"
    expect_ok train_resume "$bin" train "${ckpt[@]}" --resume "$work/ckpt" \
      --report "$work/resumed.json"
    /usr/bin/python3 - "$work/whole.json" "$work/resumed.json" "$work/stopped.json" <<'PY' || fail "resumed = uninterrupted"
import json, sys
whole, resumed, stopped = (json.load(open(p)) for p in sys.argv[1:4])
assert len(stopped["epochs"]) == 1 and stopped["config"]["stop_after"] == 1
for r in (whole, resumed):
    r.pop("time")
    for e in r["epochs"]:
        e.pop("seconds"); e.pop("samples_per_s")
    for b in r["boundaries"]:
        b.pop("route_seconds"); b.pop("route_seconds_by_phase")
assert whole == resumed, "reports differ"
assert len(whole["epochs"]) == 2 and len(whole["boundaries"][0]["history"]) == 3
PY
    # Refused checkpoints: one line naming the file and what is wrong, before any training.
    expect_checkpoint_error() {
      local name=$1 pattern=$2; shift 2
      expect_error "$name" "$pattern" "$@"
      [[ $(wc -l <"$work/err") -eq 1 ]] && pass || fail "$name: more than one line: $(cat "$work/err")"
    }
    expect_checkpoint_error resume_other_seed \
      "checkpoint = $work/ckpt/rank-0.ckpt: written by another configuration: train.seed = 2 here, 1 there" \
      "$bin" train "${ckpt[@]}" --seed 2 --resume "$work/ckpt"
    mkdir -p "$work/bad"
    head -c 100 "$work/ckpt/rank-0.ckpt" >"$work/bad/rank-0.ckpt"
    expect_checkpoint_error resume_truncated "bad/rank-0.ckpt: truncated" \
      "$bin" train "${ckpt[@]}" --resume "$work/bad"
    cp "$work/ckpt/rank-0.ckpt" "$work/bad/rank-0.ckpt"
    /usr/bin/python3 -c "
import sys
p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[len(b) // 2] ^= 0x10
open(p, 'wb').write(b)" "$work/bad/rank-0.ckpt"
    expect_checkpoint_error resume_corrupt "bad/rank-0.ckpt: payload checksum .*: the file is corrupt" \
      "$bin" train "${ckpt[@]}" --resume "$work/bad"
    cp "$work/whole.json" "$work/bad/rank-0.ckpt"
    expect_checkpoint_error resume_foreign "bad/rank-0.ckpt: not a sparselink checkpoint" \
      "$bin" train "${ckpt[@]}" --resume "$work/bad"
    rm "$work/bad/rank-0.ckpt"
    expect_checkpoint_error resume_missing "bad/rank-0.ckpt: missing" \
      "$bin" train "${ckpt[@]}" --resume "$work/bad"
    expect_checkpoint_error resume_no_dir "--resume = $work/nowhere: no such directory" \
      "$bin" train "${ckpt[@]}" --resume "$work/nowhere"
    expect_checkpoint_error stop_without_checkpoint "--stop-after = 1: needs --checkpoint" \
      "$bin" train "${ckpt[@]}" --stop-after 1
    expect_checkpoint_error stop_past_epochs "--stop-after = 3: must be in \[1, --epochs = 2\]" \
      "$bin" train "${ckpt[@]}" --stop-after 3 --checkpoint "$work/ckpt2"
    expect_checkpoint_error checkpoint_unwritable "--checkpoint = /proc/nope" \
      "$bin" train "${ckpt[@]}" --checkpoint /proc/nope
    expect_checkpoint_error checkpoint_compare_dense "--compare-dense: not with --checkpoint" \
      "$bin" train "${ckpt[@]}" --checkpoint "$work/ckpt2" --compare-dense
    # Tries run out: one clear line naming boundary, direction and step; no report.
    expect_error train_tries_run_out "boundary [0-9]+: corrupt_packet: (forward|backward|summary) packet of step [0-9]+: tries = 1" \
      "$bin" train "${faulty[@]}" --link-corrupt 0.5 --link-tries 1 --report "$work/fail.json"
    [[ -e "$work/fail.json" ]] && fail "a train whose link failed left a report behind"
  fi
fi

finish
