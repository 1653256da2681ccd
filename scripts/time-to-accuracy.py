#!/usr/bin/python3
"""Time to accuracy on a real shaped network: dense against routed training, 4 stages in 4
processes over Gloo, each rank in its own network namespace with one NIC shaped by tbf
(scripts/shaped-net), at 100 Mbit/s, 1 Gbit/s and unshaped.

  scripts/time-to-accuracy.py [--out DIR] [--epochs N] [--rates 100mbit,1gbit,none]
                              [--routed-epochs N] [--policies dense,sensitivity]
                              [--max-train-samples N] [--seeds 1] [--extra "FLAGS"]

A policy is a train --policy, or POLICY+auto for it with --link-budget auto.

Each run records wall clock, test accuracy per epoch, our wire bytes and the kernel's byte
counters of every rank's interface, and where each rank's time went (compute, waiting on the
link, routing). Writes DIR/runs.json, DIR/table.md and DIR/time_to_accuracy.png (accuracy
against wall-clock seconds, one curve per configuration).

The modelled column is one core per rank (this machine shares 2 cores among 4 ranks): the
busiest rank's CPU seconds plus the busiest interface's bytes at the link rate, no overlap
assumed, so an upper bound on a run with a core per rank. The kernel column holds every rank's
transmitted frames less 66 bytes of Ethernet, IPv4 and TCP headers each, against every byte
the ranks handed to their links (pipeline.sent_bytes: evaluation and negotiation included).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPARSELINK = os.path.abspath(os.environ.get("SPARSELINK", os.path.join(ROOT, "build/sparselink")))
SHAPED_NET = os.path.join(ROOT, "scripts/shaped-net")
RATE_BITS = {"100mbit": 100e6, "1gbit": 1e9, "10gbit": 10e9, "none": None}


def log(line):
    print(line, flush=True)


def one_run(args, rate, policy, seed, done, total, started):
    tag = f"{policy}_{rate}_s{seed}"
    report, counters = f"{args.out}/{tag}.json", f"{args.out}/{tag}_net.json"
    cmd = [SHAPED_NET, "--ranks", "4", "--rate", rate, "--counters", counters, "--",
           SPARSELINK, "train", "--transport", "gloo", "--stages", "4", "--threads", "1",
           "--epochs", str(args.epochs if policy == "dense" else args.routed_epochs or args.epochs),
           "--policy", policy.split("+")[0], "--seed", str(seed),
           "--timeout", "600", "--report", report]
    if policy.endswith("+auto"):  # a budget that follows the link (--link-budget auto)
        cmd += ["--link-budget", "auto"]
    if args.max_train_samples:
        cmd += ["--max-train-samples", str(args.max_train_samples)]
    cmd += args.extra.split()
    start = time.time()
    result = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - start
    if result.returncode != 0:
        sys.exit(f"{tag} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    r = json.load(open(report))
    net = json.load(open(counters))["ranks"]
    p = r["pipeline"]
    elapsed, curve = 0.0, []
    for e in r["epochs"]:
        elapsed += e["seconds"]
        curve.append((elapsed, e["test_accuracy"]))
    route = [0.0] * 4  # a boundary's routing time, split between its two ranks
    for b in r["boundaries"]:
        route[b["boundary"]] += b.get("route_seconds", 0) / 2
        route[b["boundary"] + 1] += b.get("route_seconds", 0) / 2
    ranks = []
    for i in range(4):
        step, idle = p["step_seconds"][i], p["idle_seconds"][i]
        ranks.append({"step": step, "idle": idle, "route": route[i],
                      "compute": max(0.0, step - idle - route[i]),
                      "cpu": p.get("cpu_seconds", [0] * 4)[i],
                      "tx": net[i]["tx_bytes"], "rx": net[i]["rx_bytes"],
                      "tx_packets": net[i]["tx_packets"]})
    busiest = max(max(x["tx"], x["rx"]) for x in ranks)
    rate_bits = RATE_BITS.get(rate)
    modelled = None
    if rate_bits and all(x["cpu"] > 0 for x in ranks):
        modelled = max(x["cpu"] for x in ranks) + busiest * 8 / rate_bits
    run = {"tag": tag, "rate": rate, "policy": policy, "seed": seed, "wall_seconds": wall,
           "train_seconds": elapsed, "curve": curve, "final_accuracy": curve[-1][1],
           "wire_bytes": r["traffic"]["wire_bytes"],
           "kernel_bytes": sum(x["tx"] for x in ranks),
           # Frames less their Ethernet, IPv4 and TCP (with timestamps) headers: 14 + 20 + 32.
           "kernel_payload_bytes": sum(x["tx"] - 66 * x["tx_packets"] for x in ranks),
           "sent_bytes": sum(p.get("sent_bytes", [0])),
           "ranks": ranks,
           "modelled_one_core_seconds": modelled}
    eta = (time.time() - started) / done * (total - done)
    log(f"[{done}/{total}] {tag}: {elapsed:.0f} s training, accuracy {100 * curve[-1][1]:.2f}%, "
        f"kernel bytes {run['kernel_bytes'] / 1e6:.1f} MB  (eta {eta / 60:.0f} min)")
    return run


def table(runs):
    lines = ["| link | policy | seed | train s | wall s | test acc | wire MB | kernel MB "
             "| kernel TCP payload / sent | modelled 1 core/rank s "
             "| per rank compute / link wait / routing s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in runs:
        split = "; ".join(f"{r['compute']:.0f}/{r['idle']:.0f}/{r['route']:.1f}" for r in x["ranks"])
        modelled = f"{x['modelled_one_core_seconds']:.0f}" if x["modelled_one_core_seconds"] else "-"
        lines.append(f"| {x['rate']} | {x['policy']} | {x['seed']} | {x['train_seconds']:.0f} | "
                     f"{x['wall_seconds']:.0f} | {100 * x['final_accuracy']:.2f}% | "
                     f"{x['wire_bytes'] / 1e6:.1f} | {x['kernel_bytes'] / 1e6:.1f} | "
                     f"{x['kernel_payload_bytes'] / max(1, x['sent_bytes']):.4f} | {modelled} | "
                     f"{split} |")
    return "\n".join(lines)


def speedups(runs):
    """Per link rate and seed: seconds until the test accuracy first reaches dense's final
    accuracy less 0.5 points (at an epoch's end), dense against each routed policy."""
    lines = ["| link | seed | target acc | dense s | policy | routed s | dense / routed |",
             "|---|---|---|---|---|---|---|"]
    def reach(run, target):
        return next((t for t, a in run["curve"] if a >= target), None)
    for dense in (x for x in runs if x["policy"] == "dense"):
        target = dense["final_accuracy"] - 0.005
        t_dense = reach(dense, target)
        for x in runs:
            if x["policy"] == "dense" or x["rate"] != dense["rate"] or x["seed"] != dense["seed"]:
                continue
            t = reach(x, target)
            ratio = f"{t_dense / t:.2f}x" if t and t_dense else "not reached"
            lines.append(f"| {x['rate']} | {x['seed']} | {100 * target:.2f}% | {t_dense:.0f} | "
                         f"{x['policy']} | {t:.0f} | {ratio} |" if t else
                         f"| {x['rate']} | {x['seed']} | {100 * target:.2f}% | {t_dense:.0f} | "
                         f"{x['policy']} | - | {ratio} |")
    return "\n".join(lines)


def plot(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for x in runs:
        xs, ys = zip(*x["curve"])
        ax.plot(xs, tuple(100 * y for y in ys), marker="o",
                linestyle="-" if x["policy"] != "dense" else "--",
                label=f"{x['policy']} @ {x['rate']} (seed {x['seed']})")
    ax.set_xlabel("training wall-clock seconds (4 ranks, 2 cores)")
    ax.set_ylabel("test accuracy after each epoch (%)")
    low = min(100 * y for x in runs for _, y in x["curve"])
    ax.set_ylim(low - 0.5, 100 * max(y for x in runs for _, y in x["curve"]) + 0.5)
    ax.set_title("Fashion-MNIST MLP, 4 stages over Gloo on shaped veth links")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/time-to-accuracy")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--routed-epochs", type=int, default=0,
                    help="epochs of the routed runs (default: --epochs): routed training may "
                         "need more epochs to reach dense's accuracy, and still be sooner")
    ap.add_argument("--rates", default="100mbit,1gbit,none")
    ap.add_argument("--policies", default="dense,sensitivity")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--max-train-samples", type=int, default=0)
    ap.add_argument("--extra", default="", help="more train flags for every run")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("time-to-accuracy: must run as root (scripts/shaped-net)")
    for rate in args.rates.split(","):
        if rate not in RATE_BITS:
            sys.exit(f"--rates: '{rate}' not in {sorted(RATE_BITS)}")
    os.makedirs(args.out, exist_ok=True)
    plan = [(rate, policy, int(seed)) for seed in args.seeds.split(",")
            for rate in args.rates.split(",") for policy in args.policies.split(",")]
    runs, started = [], time.time()
    for i, (rate, policy, seed) in enumerate(plan):
        runs.append(one_run(args, rate, policy, seed, i + 1, len(plan), started))
        json.dump(runs, open(f"{args.out}/runs.json", "w"), indent=1)
    text = table(runs) + "\n\n" + speedups(runs)
    open(f"{args.out}/table.md", "w").write(text + "\n")
    log("\n" + text)
    plot(runs, f"{args.out}/time_to_accuracy.png")
    log(f"\nplot: {args.out}/time_to_accuracy.png")


if __name__ == "__main__":
    main()
