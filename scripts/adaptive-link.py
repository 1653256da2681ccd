#!/usr/bin/python3
"""Contracts that follow the bandwidth: 4 stages over Gloo on shaped veth links
(scripts/shaped-net) with --link-budget auto, the rate dropping from HIGH to LOW at one second
of the run and recovering later, next to a run held at LOW throughout.

  scripts/adaptive-link.py [--out DIR] [--high 1gbit] [--low 100mbit] [--drop 40]
                           [--recover 100] [--epochs 2] [--negotiate-every 10]
                           [--seeds 1,2,3] [--extra "FLAGS"]

For each seed: the changing run and the held run. From the changing run's negotiations
(the report's pipeline.link_rate, one record per negotiation, the same on every rank) and each
boundary's contract history: how many negotiation periods after each rate change the budgets
settled (the first negotiation after the change whose budget is within 25 % of the period's
final one), and the step time after settling against the step at the high rate, where the
link does not bound it. Writes DIR/runs.json, DIR/table.md and DIR/adaptive_link.png (keep %, measured
rate and step time against wall-clock seconds, the rate changes marked).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPARSELINK = os.path.abspath(os.environ.get("SPARSELINK", os.path.join(ROOT, "build/sparselink")))
SHAPED_NET = os.path.join(ROOT, "scripts/shaped-net")


def log(line):
    print(line, flush=True)


def train(args, tag, rate, changes, seed):
    report = f"{args.out}/{tag}.json"
    cmd = [SHAPED_NET, "--ranks", "4", "--rate", rate]
    for c in changes:
        cmd += ["--at", c]
    cmd += ["--", SPARSELINK, "train", "--transport", "gloo", "--stages", "4", "--threads", "1",
            "--epochs", str(args.epochs), "--link-budget", "auto", "--negotiate-every",
            str(args.negotiate_every), "--seed", str(seed), "--timeout", "600",
            "--report", report] + args.extra.split()
    began = time.time()
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{tag} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    r = json.load(open(report))
    # Seconds of the shaped-net run: its start's Unix time, printed on stderr.
    # (printed where the rate changes).
    found = re.search(r"shaped-net: start at unix ([0-9.]+)", result.stderr)
    for x in r["pipeline"]["link_rate"]:
        x["seconds"] = x["unix_seconds"] - float(found.group(1)) if found else None
    log(f"{tag}: {time.time() - began:.0f} s, accuracy "
        f"{100 * r['epochs'][-1]['test_accuracy']:.2f}%")
    return r


def rate_bits(text):
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
    for u, m in units.items():
        if text.endswith(u):
            return float(text[:-len(u)]) * m
    sys.exit(f"rate '{text}': use kbit, mbit or gbit")


def settling(records, change_s, next_change_s, old_bits, new_bits, period_steps, bound_step):
    """Negotiation periods after the change at change_s until every boundary's rate in use is
    on the new rate's side of the two rates' geometric mean (and so its budget in the new
    regime); and the mean step time after that against bound_step, the step at the high rate
    (where the link does not bound it)."""
    window = [r for r in records if change_s < r["seconds"] <= next_change_s]
    middle = (old_bits * new_bits) ** 0.5 / 8
    new_side = (lambda r: r < middle) if new_bits < old_bits else (lambda r: r > middle)
    settled_at = next((i for i, r in enumerate(window)
                       if all(x is not None and new_side(x) for x in r["rate_bytes_per_s"])),
                      None)
    if settled_at is None:
        return None
    after = window[settled_at + 1:] or window[-1:]
    step = sum(r["step_seconds"] for r in after) / len(after)
    return {"periods": settled_at + 1, "steps": (settled_at + 1) * period_steps,
            "step_seconds": step, "bound_step_seconds": bound_step,
            "step_over_bound": step / bound_step if bound_step else None}


def high_rate_step(records, before_s):
    """Mean step of the periods in the 15 s before before_s (at the high rate), the first 5 s
    of the run left out."""
    xs = [r["step_seconds"] for r in records if max(5, before_s - 15) < r["seconds"] < before_s]
    return sum(xs) / len(xs) if xs else None


def keep_series(report, boundary):
    """(step, keep %) of a boundary's contract history."""
    return [(h["step"], 100 * h["keep"]) for h in report["boundaries"][boundary]["history"]]


def plot(runs, args, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    r = runs[0]["changing"]
    records = r["pipeline"]["link_rate"]
    step_to_s = {x["step"]: x["seconds"] for x in records}
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    for b in range(len(r["boundaries"])):
        pts = [(step_to_s[s], k) for s, k in keep_series(r, b) if s in step_to_s]
        if pts:
            axes[0].step(*zip(*pts), where="post", label=f"boundary {b}")
        axes[1].plot([x["seconds"] for x in records],
                     [8 * x["measured_bytes_per_s"][b] / 1e6 if x["measured_bytes_per_s"][b]
                      else float("nan") for x in records], marker=".", label=f"boundary {b}")
    axes[2].plot([x["seconds"] for x in records], [1e3 * x["step_seconds"] for x in records],
                 label="step (slowest rank)")
    axes[2].plot([x["seconds"] for x in records], [1e3 * x["target_seconds"] for x in records],
                 linestyle="--", label="target: a boundary's share of the compute")
    axes[0].set_ylabel("keep %")
    axes[1].set_ylabel("measured Mbit/s")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("step ms")
    axes[2].set_xlabel("seconds of the run (the rate changes: dotted)")
    for ax in axes:
        for t in (args.drop, args.recover):
            ax.axvline(t, color="grey", linestyle=":")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title(f"--link-budget auto: {args.high} -> {args.low} at {args.drop} s -> "
                      f"{args.high} at {args.recover} s (seed {runs[0]['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/adaptive-link")
    ap.add_argument("--high", default="1gbit")
    ap.add_argument("--low", default="100mbit")
    ap.add_argument("--drop", type=float, default=40)
    ap.add_argument("--recover", type=float, default=100)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--negotiate-every", type=int, default=10)
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--extra", default="", help="more train flags for every run")
    ap.add_argument("--from-runs", default="", help="analyse DIR/runs.json of an earlier run")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("adaptive-link: must run as root (scripts/shaped-net)")
    os.makedirs(args.out, exist_ok=True)
    if args.from_runs:  # the analysis again, on the runs of an earlier invocation
        runs = json.load(open(args.from_runs))
        analyse(runs, args)
        table(runs, args)
        return
    runs = []
    seeds = [int(s) for s in args.seeds.split(",")]
    for i, seed in enumerate(seeds):
        log(f"[{2 * i + 1}/{2 * len(seeds)}] seed {seed}: {args.high} -> {args.low} -> {args.high}")
        changing = train(args, f"changing_s{seed}", args.high,
                         [f"{args.drop}:{args.low}", f"{args.recover}:{args.high}"], seed)
        log(f"[{2 * i + 2}/{2 * len(seeds)}] seed {seed}: held at {args.low}")
        held = train(args, f"held_s{seed}", args.low, [], seed)
        runs.append({"seed": seed, "changing": changing, "held": held})
        json.dump(runs, open(f"{args.out}/runs.json", "w"), indent=1)
    analyse(runs, args)
    table(runs, args)


def analyse(runs, args):
    high, low = rate_bits(args.high), rate_bits(args.low)
    for x in runs:
        records = x["changing"]["pipeline"]["link_rate"]
        bound = high_rate_step(records, args.drop)
        x["drop"] = settling(records, args.drop, args.recover, high, low, args.negotiate_every,
                             bound)
        x["recover"] = settling(records, args.recover, float("inf"), low, high,
                                args.negotiate_every, bound)


def table(runs, args):
    lines = ["| seed | accuracy, changing | accuracy, held low | drop: periods to settle | "
             "drop: step / step at high rate | recover: periods | recover: step / step at high "
             "rate |",
             "|---|---|---|---|---|---|---|"]
    for x in runs:
        cells = []
        for k in ("drop", "recover"):
            s = x[k]
            cells += ["-", "-"] if s is None else [
                str(s["periods"]), f"{s['step_over_bound']:.2f}" if s["step_over_bound"]
                else "-"]
        lines.append(f"| {x['seed']} | {100 * x['changing']['epochs'][-1]['test_accuracy']:.2f}% | "
                     f"{100 * x['held']['epochs'][-1]['test_accuracy']:.2f}% | " +
                     " | ".join(cells) + " |")
    text = "\n".join(lines)
    open(f"{args.out}/table.md", "w").write(text + "\n")
    log("\n" + text)
    plot(runs, args, f"{args.out}/adaptive_link.png")
    log(f"\nplot: {args.out}/adaptive_link.png")


if __name__ == "__main__":
    main()
