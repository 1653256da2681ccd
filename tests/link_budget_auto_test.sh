#!/usr/bin/env bash
# `train --link-budget auto`: refused where no link times its packets and for bad values; over
# Gloo every negotiation records each boundary's measured rate, the rate in use, its budget and
# the target step time; and (root, SHAPED_NET set) on a link that drops from 1 Gbit/s to
# 5 Mbit/s mid-run the rate in use and the budget follow it down and the contract's keep falls.
set -u
bin=${SPARSELINK:?set SPARSELINK to the sparselink binary}
shaped_net=${SHAPED_NET:-}
source "$(dirname "$0")/check_lib.sh"

need_train

small=(--epochs 1 --max-train-samples 1200 --batch 200 --micro-batches 2 --threads 1
       --timeout 60)
expect_error auto_in_process "--link-budget = auto: needs --transport gloo" \
  "$bin" train --link-budget auto "${small[@]}"
expect_error bad_budget "--link-budget.*12x: must be bytes per step >= 0, or auto" \
  "$bin" train --link-budget 12x "${small[@]}"
expect_error bad_fill "--link-fill" "$bin" train --link-fill 0 "${small[@]}"

# The records: one per negotiation, the same shape on every boundary, a finite budget once a
# rate was measured, and the report's configuration says auto.
check_records() {  # REPORT MIN_RECORDS
  /usr/bin/python3 - "$1" "$2" <<'PY'
import json, math, sys
r = json.load(open(sys.argv[1]))
assert r["config"]["link_budget_bytes_per_step"] == "auto", r["config"]
recs = r["pipeline"]["link_rate"]
assert len(recs) >= int(sys.argv[2]), len(recs)
boundaries = len(r["boundaries"])
for x in recs:
    for k in ("measured_bytes_per_s", "rate_bytes_per_s", "budget_bytes"):
        assert len(x[k]) == boundaries, x
    assert x["target_seconds"] > 0 and x["step_seconds"] > 0, x
    for m, rate, b in zip(x["measured_bytes_per_s"], x["rate_bytes_per_s"], x["budget_bytes"]):
        if rate is not None:  # JSON null: +inf, nothing measured yet
            assert rate > 0 and b is not None and 0 < b < math.inf, x
assert any(m > 0 for x in recs for m in x["measured_bytes_per_s"]), "nothing was timed"
PY
}
if "$bin" launch -n 3 -- train --transport gloo --stages 3 "${small[@]}" --link-budget auto \
     --negotiate-every 2 --report "$work/auto.json" >"$work/out" 2>"$work/err"; then
  check_records "$work/auto.json" 3 && pass || fail "auto over gloo: bad records"
else
  fail "auto over gloo: $(tail -3 "$work/err")"
fi

if [[ -z $shaped_net || $(id -u) -ne 0 ]] || ! ip netns add sl-probe-$$ 2>/dev/null; then
  echo "skip: the shaped part needs root, network namespaces and SHAPED_NET"
  finish
  exit
fi
ip netns del sl-probe-$$

# 1 Gbit/s, then 5 Mbit/s from second 10 on: after the drop the rate in use comes down near
# 5 Mbit/s (probing lifts it between measurements, so the least of it), the budgets shrink
# with it and so does the keep (their medians).
if "$shaped_net" --ranks 2 --rate 1gbit --at 10:5mbit -- "$bin" train --transport gloo \
     --stages 2 --epochs 5 --max-train-samples 12800 --batch 128 --threads 1 --timeout 120 \
     --link-budget auto --negotiate-every 5 --report "$work/drop.json" \
     >"$work/out" 2>"$work/err"; then
  drop_at=$(grep -oE "rate 5mbit at 10 s \(unix [0-9.]+\)" "$work/err" | grep -oE "[0-9]+\.[0-9]+")
  /usr/bin/python3 - "$work/drop.json" "${drop_at:-0}" <<'PY' && pass || fail "auto did not follow the drop: $(tail -3 "$work/err")"
import json, sys
r = json.load(open(sys.argv[1])); drop = float(sys.argv[2])
assert drop > 0, "no rate change was printed"
recs = r["pipeline"]["link_rate"]
before = [x for x in recs if x["unix_seconds"] < drop and x["rate_bytes_per_s"][0]]
after = [x for x in recs if x["unix_seconds"] > drop + 2]
assert before and after, (len(before), len(after))
mbit = lambda x: 8 * x["rate_bytes_per_s"][0] / 1e6
assert mbit(before[-1]) > 50, f"before the drop: {mbit(before[-1]):.1f} Mbit/s"
least = min(mbit(x) for x in after)
assert least < 10, f"after the drop: at least {least:.1f} Mbit/s"
budgets = sorted(x["budget_bytes"][0] for x in after)
assert budgets[len(budgets) // 2] < before[-1]["budget_bytes"][0] / 5, (budgets, before[-1])
history = r["boundaries"][0]["history"]
keep_before = [h["keep"] for h in history if h["step"] <= before[-1]["step"]][-1]
keeps_after = [h["keep"] for h in history if h["step"] >= after[0]["step"]]
assert keeps_after and sorted(keeps_after)[len(keeps_after) // 2] < keep_before, (keep_before,
                                                                              keeps_after)
PY
else
  fail "auto on a dropping link: $(tail -3 "$work/err")"
fi
finish
