#!/usr/bin/python3
"""Plots a `sparselink bench --json` file: GB/s of dense input per case and method (log scale),
and, for the cases on several threads, each method's speed-up over one thread (timed in
alternating rounds) beside the read-only pass's, the memory system's.

usage: plot_bench.py BENCH.json OUT.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Drawn in this order; a method a run did not time (decode only, no LibTorch) is left out.
METHODS = [
    ("fast", "fast route + encode"),
    ("fast_decode", "fast decode + scatter"),
    ("read", "read-only pass"),
    ("memcpy", "memcpy"),
    ("torch_topk", "torch::topk + gather"),
    ("nth_element", "std::nth_element"),
    ("reference", "reference route"),
]


def label(case):
    select = "approx" if case.get("select") == "approximate" else "exact"
    return (f"{case['rows']}x{case['cols']}\nkeep {case['keep'] * 100:g}% {case['codec']}\n"
            f"{case['threads']} thr {select}")


def main():
    if len(sys.argv) != 3:
        print("usage: plot_bench.py BENCH.json OUT.png", file=sys.stderr)
        return 2
    path, out = sys.argv[1], sys.argv[2]
    try:
        with open(path) as f:
            bench = json.load(f)
        cases = bench["cases"]
        if not cases:
            raise ValueError("no cases")
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"plot_bench.py: {path}: {e}", file=sys.stderr)
        return 1
    methods = [(k, name) for k, name in METHODS if any(k in c["gbps"] for c in cases)]
    scaled = [c for c in cases if c.get("speedup_over_one_thread")]

    fig, axes = plt.subplots(
        1, 2 if scaled else 1, figsize=(15 if scaled else 12, 6),
        gridspec_kw={"width_ratios": [4, 1]} if scaled else None, squeeze=False)
    ax = axes[0][0]
    width = 0.8 / len(methods)
    for m, (key, name) in enumerate(methods):
        xs = [i + (m - (len(methods) - 1) / 2) * width for i in range(len(cases))]
        ys = [c["gbps"].get(key, 0) or float("nan") for c in cases]
        ax.bar(xs, ys, width, label=name)
    ax.set_yscale("log")
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([label(c) for c in cases], fontsize=7)
    ax.set_ylabel("GB/s of dense fp32 input")
    machine = bench.get("machine", {})
    ax.set_title(f"sparselink bench on {machine.get('cpu', '?')} "
                 f"({machine.get('simd_target', '?')} kernels)")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=len(methods), loc="upper center", bbox_to_anchor=(0.5, -0.16))

    if scaled:
        ax = axes[0][1]
        keys = sorted({k for c in scaled for k in c["speedup_over_one_thread"]})
        width = 0.8 / len(keys)
        for m, key in enumerate(keys):
            xs = [i + (m - (len(keys) - 1) / 2) * width for i in range(len(scaled))]
            ys = [c["speedup_over_one_thread"].get(key, float("nan")) for c in scaled]
            ax.bar(xs, ys, width, label=key)
        top = max(c["threads"] for c in scaled)
        ax.axhline(top, color="gray", linestyle=":", linewidth=1)
        ax.set_xticks(range(len(scaled)))
        ax.set_xticklabels([label(c) for c in scaled], fontsize=7)
        ax.set_ylabel("speed-up over one thread")
        ax.set_title("threads vs one (alternating rounds)", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
