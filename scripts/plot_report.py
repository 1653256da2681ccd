#!/usr/bin/python3
"""Plots a `sparselink train` report: accuracy per epoch (dense vs routed), the contract keep
of each boundary over the steps, and a heat map of each boundary's sensitivity map.

usage: plot_report.py REPORT.json OUT_DIR
"""
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        print("usage: plot_report.py REPORT.json OUT_DIR", file=sys.stderr)
        return 2
    path, out_dir = sys.argv[1], sys.argv[2]
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        print(f"plot_report.py: {path}: {e}", file=sys.stderr)
        return 1
    os.makedirs(out_dir, exist_ok=True)
    config = report["config"]
    title = f"{config['model']} · {config['policy']} · keep {config['keep']} · {config['codec']}"

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = report["epochs"]
    ratio = report["traffic"]["ratio"]
    ax.plot([e["epoch"] for e in epochs], [100 * e["test_accuracy"] for e in epochs], "o-",
            label=f"routed ({ratio:.1f}x fewer bytes)" if ratio > 0 else "one stage (no boundary)")
    if "baseline" in report:
        base = report["baseline"]["epochs"]
        ax.plot([e["epoch"] for e in base], [100 * e["test_accuracy"] for e in base], "s--",
                label="dense fp32")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "accuracy.png"), dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for b in report["boundaries"]:
        steps = [0] + [h["step"] for h in b["history"]]
        keeps = [100 * h["keep"] for h in b["history"]]
        if keeps:
            keeps = [keeps[0]] + keeps
        else:
            keeps = [100 * b["contract"]["keep"]] * 2
            steps = [0, 1]
        ax.step(steps, keeps, where="post", label=f"boundary {b['boundary']}")
    ax.set_xlabel("step")
    ax.set_ylabel("contract keep (%)")
    ax.set_title("negotiated contracts", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "contracts.png"), dpi=120)
    plt.close(fig)

    boundaries = report["boundaries"]
    fig, axes = plt.subplots(1, max(1, len(boundaries)), figsize=(4 * max(1, len(boundaries)), 3.6),
                             squeeze=False)
    for ax, b in zip(axes[0], boundaries):
        values = b["sensitivity"]
        side = math.ceil(math.sqrt(len(values)))
        grid = values + [float("nan")] * (side * side - len(values))
        rows = [grid[i * side:(i + 1) * side] for i in range(side)]
        image = ax.imshow(rows, cmap="viridis", vmin=0, vmax=1)
        unit = "neuron" if b["block"] == 1 else f"block of {b['block']}"
        ax.set_title(f"boundary {b['boundary']}: {len(values)} units ({unit})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle("sensitivity maps at the end of training", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "sensitivity.png"), dpi=120)
    plt.close(fig)
    print(f"plots: {out_dir}/accuracy.png contracts.png sensitivity.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
