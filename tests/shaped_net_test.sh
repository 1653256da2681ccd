#!/usr/bin/env bash
# scripts/shaped-net: the shaped rate holds, rank variables are set, a failed rank fails the
# job, bad arguments are refused by name, and nothing is left behind. Skips unless root with
# network namespaces.
set -u
script=${SHAPED_NET:?set SHAPED_NET to scripts/shaped-net}
source "$(dirname "$0")/check_lib.sh"

if [[ $(id -u) -ne 0 ]] || ! ip netns add sl-probe-$$ 2>/dev/null; then
  echo "skip: needs root and network namespaces"
  exit 0
fi
ip netns del sl-probe-$$
before=$(ip netns list | wc -l)

# 8 MiB from rank 1 to rank 0 over a 100 Mbit/s link: about 0.7 s, at 80-100 Mbit/s goodput.
cat >"$work/stream.py" <<'PY'
import os, socket, sys, time
rank, size = int(os.environ["RANK"]), 8 << 20
assert os.environ["WORLD_SIZE"] == "2" and os.environ["GLOO_SOCKET_IFNAME"] == "eth0"
if rank == 0:
    s = socket.socket(); s.bind(("0.0.0.0", int(os.environ["MASTER_PORT"]))); s.listen(1)
    c, _ = s.accept(); got, start = 0, time.time()
    while got < size:
        b = c.recv(1 << 20)
        if not b: break
        got += len(b)
    print(f"mbit {got * 8 / (time.time() - start) / 1e6:.1f}")
else:
    for _ in range(100):
        try:
            c = socket.create_connection((os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])))
            break
        except OSError:
            time.sleep(0.05)
    c.sendall(b"x" * size); c.close()
PY
if "$script" --ranks 2 --rate 100mbit --counters "$work/counters.json" -- \
     /usr/bin/python3 "$work/stream.py" >"$work/out" 2>"$work/err"; then
  rate=$(grep -oE "mbit [0-9.]+" "$work/out" | cut -d' ' -f2)
  /usr/bin/python3 -c "import sys; r=float(sys.argv[1]); sys.exit(0 if 70 <= r <= 101 else 1)" \
    "${rate:-0}" && pass || fail "100mbit link gave ${rate:-no} Mbit/s"
  /usr/bin/python3 - "$work/counters.json" <<'PY' && pass || fail "counters: $(cat "$work/counters.json")"
import json, sys
c = json.load(open(sys.argv[1]))["ranks"]
assert c[1]["tx_bytes"] >= 8 << 20 and c[0]["rx_bytes"] >= 8 << 20, c
PY
else
  fail "a 2-rank stream failed: $(tail -3 "$work/err")"
fi

"$script" --ranks 3 --rate none -- bash -c '[[ $RANK == 2 ]] && exit 7; exit 0' 2>"$work/err"
rc=$?
[[ $rc -eq 7 ]] && grep -q "rank 2 exited with code 7" "$work/err" && pass ||
  fail "a failed rank: exit $rc, $(cat "$work/err")"

expect_refusal() {
  local pattern=$1; shift
  "$script" "$@" >/dev/null 2>"$work/err"
  local rc=$?
  [[ $rc -ne 0 ]] && grep -qE -- "$pattern" "$work/err" && pass ||
    fail "shaped-net $*: exit $rc, $(cat "$work/err")"
}
expect_refusal "--ranks = '0'" --ranks 0 --rate 1gbit -- true
expect_refusal "--rate = 'fast'" --ranks 2 --rate fast -- true
expect_refusal "--at = '20'" --ranks 2 --rate 1gbit --at 20 -- true
expect_refusal "no COMMAND" --ranks 2 --rate 1gbit --

# Killed mid-run: the namespaces go with it.
"$script" --ranks 2 --rate 10mbit -- sleep 60 &
job=$!
sleep 1.5
kill -TERM $job
wait $job 2>/dev/null
sleep 0.5
after=$(ip netns list | wc -l)
[[ $after -eq $before ]] && pass || fail "left $((after - before)) namespaces behind"
"$script" --cleanup && pass || fail "--cleanup"

finish
