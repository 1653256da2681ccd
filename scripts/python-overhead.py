#!/usr/bin/python3
"""What the Python layer adds to a boundary call, at the default training shape, measured two
ways: (1) end to end, sparselink.RoutedBoundary driven from Python against the same boundary
driven from C++ (the extension's own loop), forward + backward + step end per call, the same
options, interleaved blocks in turning order, the median of the paired ratios; (2) the Python
layer alone, the module's code with the C++ work stubbed out plus one pybind11 call, against
the C++ call. (1) also carries what differs between the two loops besides Python (allocator
and cache state), a few percent either way from run to run; (2) is the overhead itself.

    PYTHONPATH=build/python scripts/python-overhead.py [--rows 128] [--cols 1024] [--rounds 7]
"""
import argparse
import json
import statistics
import sys
import time

import torch

import sparselink as sl


def engine_backward(y, g):
    """Backward straight into torch's engine: what loss.backward() does once per step after
    its Python argument handling, which a model pays once, not once per boundary."""
    torch.autograd.Variable._execution_engine.run_backward(
        (y,), (g,), False, False, (), allow_unreachable=True, accumulate_grad=True)


def python_seconds(options, rows, cols, warmup, calls, backward):
    boundary = sl.RoutedBoundary(**options)
    torch.manual_seed(1)
    x = torch.randn(rows, cols).requires_grad_()
    g = torch.randn(rows, cols)
    for _ in range(warmup):
        backward(boundary(x), g)
    start = time.perf_counter()
    for _ in range(calls):
        backward(boundary(x), g)
    boundary.step_end()  # the last call's step, which the C++ loop also ends
    return (time.perf_counter() - start) / calls


class _StubImpl:
    """Stands in for the extension's boundary: returns at once, so that a module call costs
    only its Python (nn.Module.__call__, RoutedBoundary.forward, the step bookkeeping)."""

    def __init__(self, out):
        self.out = out
        self.steps = 0

    def forward(self, activation, training):
        return self.out

    def step_end(self):
        pass


def layer_seconds(rows, cols, calls=20000):
    """Seconds per call that the Python layer itself costs: the module's Python code with the
    C++ work taken out, plus one pybind11 call that takes a tensor (the extension's entry)."""
    x = torch.randn(rows, cols).requires_grad_()
    boundary = sl.RoutedBoundary(seed=1)
    boundary._impl = _StubImpl(torch.empty(0))
    start = time.perf_counter()
    for _ in range(calls):
        boundary(x)
    module = (time.perf_counter() - start) / calls
    start = time.perf_counter()
    for _ in range(calls):
        sl._sparselink._data_ptr_seen(x)
    return module + (time.perf_counter() - start) / calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--calls", type=int, default=50, help="calls per block")
    ap.add_argument("--rounds", type=int, default=30, help="blocks of each, interleaved")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    options = {"seed": 1}
    cpp, py, py_tensor = [], [], []
    began = time.time()
    blocks = [
        (cpp, lambda: sl._sparselink._time_cpp_calls(dict(sl.default_options(), **options),
                                                     args.rows, args.cols, 10, args.calls)),
        (py, lambda: python_seconds(options, args.rows, args.cols, 10, args.calls,
                                    engine_backward)),
        (py_tensor, lambda: python_seconds(options, args.rows, args.cols, 10, args.calls,
                                           lambda y, g: y.backward(g))),
    ]
    for r in range(args.rounds):
        # The order turns every round: a block right after another kind runs slower (the
        # allocator's and the caches' state), which must not always hit the same side.
        for k in range(len(blocks)):
            into, run = blocks[(r + k) % len(blocks)]
            into.append(run())
        left = (time.time() - began) / (r + 1) * (args.rounds - r - 1)
        print(f"round {r + 1}/{args.rounds}: C++ {cpp[-1] * 1e6:.1f} us, Python "
              f"{py[-1] * 1e6:.1f} us, with tensor.backward {py_tensor[-1] * 1e6:.1f} us per "
              f"call; {left:.0f} s left", file=sys.stderr, flush=True)
    # Ratios block by block (each Python block against the C++ block next to it), so that
    # drifts of the machine's speed cancel; then the median.
    c, p, pt = (statistics.median(v) for v in (cpp, py, py_tensor))
    ratio = statistics.median(a / b for a, b in zip(py, cpp))
    ratio_tensor = statistics.median(a / b for a, b in zip(py_tensor, cpp))
    result = {"rows": args.rows, "cols": args.cols, "cpp_us": c * 1e6, "python_us": p * 1e6,
              "python_tensor_backward_us": pt * 1e6, "python_over_cpp": ratio,
              "python_tensor_backward_over_cpp": ratio_tensor,
              "threads": torch.get_num_threads(), "rounds": args.rounds, "calls": args.calls}
    layer = statistics.median(layer_seconds(args.rows, args.cols) for _ in range(5))
    result["python_layer_us"] = layer * 1e6
    result["python_layer_share"] = layer / c
    print(f"Python layer alone (module code + one pybind11 call): {layer * 1e6:.1f} us per "
          f"call, {layer / c * 100:.2f} % of the C++ call")
    print(f"{args.rows} x {args.cols}, forward + backward + step end per call: C++ "
          f"{c * 1e6:.1f} us; Python {p * 1e6:.1f} us (Python / C++ {ratio:.3f}); Python with "
          f"tensor.backward() per call {pt * 1e6:.1f} us ({ratio_tensor:.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
