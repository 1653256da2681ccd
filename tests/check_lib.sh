# Shared by the shell tests: a scratch directory, pass/fail counters and the two expectations.
# Source it after `set -u`; end the test with `finish`.
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
  if ! grep -qE -- "$pattern" "$work/err"; then
    fail "$name: stderr lacks '$pattern': $(head -3 "$work/err")"
    return
  fi
  pass
}

finish() {
  echo "$passed passed, $failed failed"
  [[ $failed -eq 0 ]]
}
