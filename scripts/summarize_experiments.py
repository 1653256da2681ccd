#!/usr/bin/python3
"""Summarizes the reports of scripts/experiments.sh: mean and spread over seeds of test
accuracy and traffic ratio per (model, policy, keep, codec), the accuracy change against the
dense run of the same seed (mean and spread of the per-seed differences, over the seeds that
have both), as a markdown table (stdout and OUT_DIR/summary.md) and a Pareto plot per model
(OUT_DIR/pareto_<model>.png).

usage: summarize_experiments.py OUT_DIR
"""
import glob
import json
import os
import statistics
import sys
from collections import defaultdict


def main():
    out = sys.argv[1]
    runs = defaultdict(dict)
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        name = os.path.basename(path)[:-5]
        # <model>_<policy>_<keep>_<codec>[_<tag>]_s<seed>; a tag (experiments.sh TAG) marks a
        # variant, shown as policy-tag.
        parts = name.split("_")
        if len(parts) not in (5, 6) or not parts[-1].startswith("s"):
            print(f"skipped {path}: not <model>_<policy>_<keep>_<codec>[_<tag>]_s<seed>",
                  file=sys.stderr)
            continue
        model, policy, keep, codec = parts[:4]
        seed = parts[-1]
        if len(parts) == 6:
            policy = f"{policy}-{parts[4]}"
        try:
            with open(path) as f:
                report = json.load(f)
        except (ValueError, OSError) as e:
            print(f"skipped {path}: {e}", file=sys.stderr)
            continue
        runs[(model, policy, keep, codec)][seed] = report
    dense = {}
    for (model, policy, keep, codec), by_seed in runs.items():
        if policy == "dense":
            dense[model] = {s: r["final"]["test_accuracy"] for s, r in by_seed.items()}
    for model in sorted({m for (m, _, _, _) in runs}):
        if model not in dense:
            print(f"no dense runs for {model}: no accuracy change and no Pareto plot "
                  f"(pareto_{model}.png, if any, is from an earlier summary)", file=sys.stderr)

    def keep_order(keep):  # numbers ascending, then "auto"
        try:
            return (0, float(keep))
        except ValueError:
            return (1, 0.0)

    rows = []
    for (model, policy, keep, codec), by_seed in sorted(
            runs.items(), key=lambda kv: (kv[0][0], kv[0][1], keep_order(kv[0][2]), kv[0][3])):
        acc = [r["final"]["test_accuracy"] * 100 for r in by_seed.values()]
        ratio = [r["traffic"]["ratio"] for r in by_seed.values()]
        share = [r["time"]["route_share_of_train"] * 100 for r in by_seed.values()]
        # Paired with the dense run of the same seed; the spread is that of the differences.
        deltas = [(r["final"]["test_accuracy"] - dense[model][s]) * 100
                  for s, r in by_seed.items() if s in dense.get(model, {})]
        keeps = [statistics.mean(b["contract"]["keep"] for b in r["boundaries"])
                 for r in by_seed.values() if r["boundaries"]]  # --stages 1: no boundary
        rows.append({
            "model": model, "policy": policy, "keep": keep, "codec": codec,
            "seeds": len(acc), "acc": statistics.mean(acc),
            "acc_sd": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "delta": statistics.mean(deltas) if deltas else float("nan"),
            "delta_sd": statistics.stdev(deltas) if len(deltas) > 1 else 0.0,
            "paired": len(deltas),
            "ratio": statistics.mean(ratio), "share": statistics.mean(share),
            "final_keep": statistics.mean(keeps) * 100 if keeps else float("nan"),
        })
    lines = ["| model | policy | keep | codec | seeds | test acc. (mean ± sd) | Δ vs dense, same "
             "seed (points, mean ± sd) | traffic ratio (dense fp32 / wire) | mean final keep "
             "| routing share of train time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["paired"] == 0:
            delta = "–"
        else:
            delta = f"{r['delta']:+.2f} ± {r['delta_sd']:.2f}"
            if r["paired"] < r["seeds"]:
                delta += f" ({r['paired']} of {r['seeds']} seeds have a dense run)"
        final_keep = "–" if r["final_keep"] != r["final_keep"] else f"{r['final_keep']:.1f} %"
        lines.append(
            f"| {r['model']} | {r['policy']} | {r['keep']} | {r['codec']} | {r['seeds']} "
            f"| {r['acc']:.2f} ± {r['acc_sd']:.2f} | {delta} | {r['ratio']:.1f}× "
            f"| {final_keep} | {r['share']:.1f} % |")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    for model in sorted({r["model"] for r in rows}):
        fig, ax = plt.subplots(figsize=(9.5, 4.2))
        colors = {"sensitivity": "tab:blue", "magnitude": "tab:orange", "random": "tab:red",
                  "structured": "tab:green"}
        floor = -3.0  # points below it are drawn on the floor, with their value
        plotted = [r for r in rows if r["model"] == model and r["policy"].split("-")[0] != "dense"
                   and r["delta"] == r["delta"] and r["ratio"] > 0]  # no dense run: no delta
        if not plotted:
            plt.close(fig)
            continue
        # One legend entry per configuration (colour: policy, marker: its place in the list):
        # labels next to the points collide where configurations lie close.
        markers = ["o", "s", "^", "D", "P", "X", "*", "h", "<", ">"]
        for i, r in enumerate(plotted):
            color = colors.get(r["policy"].split("-")[0], "gray")
            marker = markers[i % len(markers)]
            label = f"{r['policy']} {r['keep']} {r['codec']}: {r['ratio']:.1f}x, {r['delta']:+.2f}"
            if r["delta"] < floor:  # drawn on the floor, pointing down
                ax.plot(r["ratio"], floor, "v", color=color, markersize=8, label=label)
            else:
                ax.errorbar(r["ratio"], r["delta"], yerr=r["delta_sd"], fmt=marker, capsize=3,
                            color=color, label=label)
        ax.set_ylim(floor - 0.3, max(0.6, max(r["delta"] + r["delta_sd"] for r in plotted) + 0.3))
        ax.axhline(0, color="gray", lw=0.8)
        ax.axhline(-0.5, color="red", lw=0.8, ls="--", label="-0.5 points")
        ax.axhline(-1.0, color="orange", lw=0.8, ls="--", label="-1 point")
        ax.set_xscale("log")
        ax.set_xlabel("traffic reduction (dense fp32 bytes / wire bytes, both directions)")
        ax.set_ylabel("test accuracy change vs dense, same seed (points)")
        ax.set_title(f"{model}: accuracy kept vs bytes saved (mean over seeds)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"pareto_{model}.png"), dpi=120)
        plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
