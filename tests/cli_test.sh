#!/usr/bin/env bash
# End-to-end checks of the sparselink command: help, version, demo, inspect, and bad input.
# Every bad input must give one clear line on stderr and a non-zero exit, never a crash.
set -u
bin=${SPARSELINK:?set SPARSELINK to the sparselink binary}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }

# expect_ok NAME CMD... : exit 0
expect_ok() {
  local name=$1; shift
  if "$@" >"$work/out" 2>"$work/err"; then pass; else fail "$name: exit $? $(head -3 "$work/err")"; fi
}
# expect_error NAME PATTERN CMD... : exit 1..127 (not a signal) and stderr matches PATTERN
expect_error() {
  local name=$1 pattern=$2; shift 2
  "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [[ $rc -eq 0 || $rc -ge 128 ]]; then fail "$name: exit $rc"; return; fi
  if ! grep -qE -- "$pattern" "$work/err"; then fail "$name: stderr lacks '$pattern': $(head -3 "$work/err")"; return; fi
  pass
}

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

expect_error unknown_flag "--frobnicate" "$bin" demo --frobnicate
expect_error no_subcommand "subcommand" "$bin"
expect_error demo_bad_codec "codec = fp7" "$bin" demo --codec fp7 --out "$work/x"
expect_error demo_bad_bandwidth "bandwidth = fast" "$bin" demo --link-bandwidth fast --out "$work/x"
expect_error demo_zero_steps "steps" "$bin" demo --steps 0
expect_error demo_negative_budget "link-budget" "$bin" demo --link-budget -5

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
