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

# Exits the test as skipped unless $bin has `train` (built with LibTorch) and Fashion-MNIST is
# installed; then clears the job variables of the caller's shell, so none leaks into a rank.
need_train() {
  if ! "$bin" --help 2>/dev/null | grep -qE "^  train( |$)"; then
    echo "skip: this sparselink has no train (built without LibTorch)"
    exit 0
  fi
  if [[ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]]; then
    echo "skip: no Fashion-MNIST (apt-get install dataset-fashion-mnist)"
    exit 0
  fi
  unset RANK WORLD_SIZE MASTER_ADDR MASTER_PORT LOCAL_RANK LOCAL_WORLD_SIZE
  unset OMPI_COMM_WORLD_RANK OMPI_COMM_WORLD_SIZE
}
