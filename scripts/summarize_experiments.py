#!/usr/bin/python3
"""Summarizes the reports of scripts/experiments.sh: mean and spread over seeds of test
accuracy and traffic ratio per (model, policy, keep, codec), the accuracy change against the
dense runs of the same seeds, as a markdown table (stdout and OUT_DIR/summary.md) and a Pareto
plot (OUT_DIR/pareto.png).

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
    rows = []
    for (model, policy, keep, codec), by_seed in sorted(runs.items()):
        acc = [r["final"]["test_accuracy"] * 100 for r in by_seed.values()]
        ratio = [r["traffic"]["ratio"] for r in by_seed.values()]
        share = [r["time"]["route_share_of_train"] * 100 for r in by_seed.values()]
        deltas = [(r["final"]["test_accuracy"] - dense[model][s]) * 100
                  for s, r in by_seed.items() if s in dense.get(model, {})]
        final_keep = statistics.mean(
            statistics.mean(b["contract"]["keep"] for b in r["boundaries"]) for r in by_seed.values())
        rows.append({
            "model": model, "policy": policy, "keep": keep, "codec": codec,
            "seeds": len(acc), "acc": statistics.mean(acc),
            "acc_sd": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "delta": statistics.mean(deltas) if deltas else float("nan"),
            "ratio": statistics.mean(ratio), "share": statistics.mean(share),
            "final_keep": final_keep * 100,
        })
    lines = ["| model | policy | keep | codec | seeds | test acc. (mean ± sd) | Δ vs dense (points) "
             "| traffic ratio (dense fp32 / wire) | mean final keep | routing share of train time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['policy']} | {r['keep']} | {r['codec']} | {r['seeds']} "
            f"| {r['acc']:.2f} ± {r['acc_sd']:.2f} | {r['delta']:+.2f} | {r['ratio']:.1f}× "
            f"| {r['final_keep']:.1f} % | {r['share']:.1f} % |")
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
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        colors = {"sensitivity": "tab:blue", "magnitude": "tab:orange", "random": "tab:red",
                  "structured": "tab:green"}
        floor = -3.0  # points below it are drawn on the floor, with their value
        plotted = [r for r in rows if r["model"] == model and r["policy"].split("-")[0] != "dense"
                   and r["delta"] == r["delta"] and r["ratio"] > 0]  # no dense run: no delta
        if not plotted:
            plt.close(fig)
            continue
        for i, r in enumerate(plotted):
            color = colors.get(r["policy"].split("-")[0], "gray")
            label = f"{r['policy']} {r['keep']} {r['codec']}"
            if r["delta"] < floor:
                ax.plot(r["ratio"], floor, "v", color=color)
                label += f" ({r['delta']:+.1f})"
                y = floor
            else:
                ax.errorbar(r["ratio"], r["delta"], yerr=r["acc_sd"], fmt="o", capsize=3, color=color)
                y = r["delta"]
            ax.annotate(label, (r["ratio"], y), fontsize=7, xytext=(4, 4 if i % 2 else -9),
                        textcoords="offset points")
        ax.set_ylim(floor - 0.3, 0.6)
        ax.axhline(0, color="gray", lw=0.8)
        ax.axhline(-0.5, color="red", lw=0.8, ls="--", label="-0.5 points")
        ax.axhline(-1.0, color="orange", lw=0.8, ls="--", label="-1 point")
        ax.set_xscale("log")
        ax.set_xlabel("traffic reduction (dense fp32 bytes / wire bytes, both directions)")
        ax.set_ylabel("test accuracy change vs dense (points)")
        ax.set_title(f"{model}: accuracy kept vs bytes saved (mean over seeds)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"pareto_{model}.png"), dpi=120)
        plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
