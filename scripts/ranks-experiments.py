#!/usr/bin/python3
"""The measurements behind docs/RESULTS.md's "Across processes" section.

  scripts/ranks-experiments.py [--out DIR] [--only equivalence,schedule,faults,throughput]
                               [--tries 20]

equivalence  1 epoch of the MLP in one process and as 4 ranks over Gloo (sparselink launch):
             contracts, wire bytes, loss and accuracy must agree.
schedule     4 ranks, gpipe and 1f1b, M = 1, 2, 4, 8 micro-batches: each rank's measured idle
             share of its training steps next to the bubble formula (S-1)/(M+S-1).
faults       TRIES times: 4 ranks train; one of them, chosen at random, is killed with SIGKILL at
             a random moment of training; every other rank must exit non-zero within its
             --timeout plus 5 s, with a line naming its rank.
throughput   bench link_throughput: the link's bytes/s over the raw process-group send/recv.

Needs a build (SPARSELINK, default build/sparselink; LINK_THROUGHPUT, default
build/link_throughput). Prints markdown tables and writes JSON under --out.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time

SPARSELINK = os.environ.get("SPARSELINK", "build/sparselink")
LINK_THROUGHPUT = os.environ.get("LINK_THROUGHPUT", "build/link_throughput")


def log(line):
    print(line, flush=True)


def run(cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-2000:]}")
    return result


def equivalence(out):
    common = ["--stages", "4", "--epochs", "1", "--threads", "1", "--micro-batches", "2",
              "--schedule", "1f1b", "--seed", "1"]
    one, ranks = f"{out}/equiv_inprocess.json", f"{out}/equiv_gloo.json"
    start = time.time()
    run([SPARSELINK, "train", *common, "--report", one])
    t_one = time.time() - start
    start = time.time()
    run([SPARSELINK, "launch", "-n", "4", "--", "train", "--transport", "gloo", *common,
         "--report", ranks])
    t_ranks = time.time() - start
    a, b = (json.load(open(p)) for p in (one, ranks))
    strip = lambda r: [{k: v for k, v in x.items() if "seconds" not in k} for x in r["boundaries"]]
    same_boundaries = strip(a) == strip(b)
    acc = (a["epochs"][-1]["test_accuracy"], b["epochs"][-1]["test_accuracy"])
    loss = (a["epochs"][-1]["loss"], b["epochs"][-1]["loss"])
    log("\n| run | wall s | test accuracy | loss | wire bytes |\n|---|---|---|---|---|")
    for name, r, t in (("one process", a, t_one), ("4 ranks, Gloo", b, t_ranks)):
        wire = sum(x["forward_wire_bytes"] + x["backward_wire_bytes"] for x in r["boundaries"])
        log(f"| {name} | {t:.1f} | {100 * r['epochs'][-1]['test_accuracy']:.2f}% | "
            f"{r['epochs'][-1]['loss']:.6f} | {wire} |")
    log(f"\ncontracts and bytes identical: {same_boundaries}; accuracy equal bits: "
        f"{acc[0] == acc[1]}; loss equal bits: {loss[0] == loss[1]}")
    return {"identical_boundaries": same_boundaries, "accuracy": acc, "loss": loss,
            "wall_seconds": [t_one, t_ranks]}


def schedule(out):
    rows = []
    log("\n| schedule | M | formula idle | measured idle per rank (0..3) | mean | step s |"
        "\n|---|---|---|---|---|---|")
    for sched in ("gpipe", "1f1b"):
        for m in (1, 2, 4, 8):
            path = f"{out}/schedule_{sched}_{m}.json"
            run([SPARSELINK, "launch", "-n", "4", "--", "train", "--transport", "gloo",
                 "--stages", "4", "--epochs", "1", "--max-train-samples", "12800",
                 "--threads", "1", "--micro-batches", str(m), "--schedule", sched,
                 "--report", path])
            p = json.load(open(path))["pipeline"]
            mean = sum(p["idle_share"]) / len(p["idle_share"])
            rows.append({"schedule": sched, "micro_batches": m, **p})
            shares = " ".join(f"{100 * s:.0f}%" for s in p["idle_share"])
            log(f"| {sched} | {m} | {100 * p['predicted_bubble']:.0f}% | {shares} | "
                f"{100 * mean:.0f}% | {max(p['step_seconds']):.1f} |")
    return rows


def fault_try(out, i, timeout_s, rng):
    port = 29700 + i
    procs = []
    out0 = f"{out}/fault_{i}_0.out"
    for rank in range(4):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="4", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        procs.append(subprocess.Popen(
            [SPARSELINK, "train", "--transport", "gloo", "--stages", "4", "--epochs", "100",
             "--max-train-samples", "3000", "--threads", "1", "--micro-batches", "2",
             "--timeout", str(timeout_s)],
            env=env, stdout=open(out0, "w") if rank == 0 else subprocess.DEVNULL,
            stderr=open(f"{out}/fault_{i}_{rank}.err", "w")))
    # Rank 0 prints "routed: ..." as training starts: the kill lands at a random step after.
    deadline = time.time() + 60
    while time.time() < deadline and "routed:" not in open(out0).read():
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 6.0))
    victim = rng.randrange(4)
    procs[victim].send_signal(signal.SIGKILL)
    killed = time.time()
    ends = {}
    while len(ends) < 3 and time.time() - killed < 3 * timeout_s + 30:
        for rank, p in enumerate(procs):
            if rank != victim and rank not in ends and p.poll() is not None:
                ends[rank] = (time.time() - killed, p.returncode)
        time.sleep(0.05)
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
    lines = {r: open(f"{out}/fault_{i}_{r}.err").read().strip().split("\n") for r in ends}
    named = all(len(v) == 1 and f"rank {r} of 4" in v[0] for r, v in lines.items())
    ok = (len(ends) == 3 and named and
          all(rc != 0 and s <= timeout_s + 5 for s, rc in ends.values()))
    return {"victim": victim, "ends": ends, "ok": ok, "named": named}


def faults(out, tries):
    rng = random.Random(2026)
    timeout_s = 5
    results, start = [], time.time()
    for i in range(tries):
        r = fault_try(out, i, timeout_s, rng)
        results.append(r)
        slowest = max((s for s, _ in r["ends"].values()), default=float("nan"))
        done = i + 1
        eta = (time.time() - start) / done * (tries - done)
        log(f"fault {done}/{tries}: killed rank {r['victim']}, others out in <= {slowest:.1f} s, "
            f"{'ok' if r['ok'] else 'FAILED'}  (eta {eta:.0f} s)")
    passed = sum(r["ok"] for r in results)
    worst = max(max(s for s, _ in r["ends"].values()) for r in results if r["ends"])
    log(f"\nfaults: {passed}/{tries} tries ended every surviving rank non-zero within "
        f"{timeout_s} + 5 s; slowest {worst:.1f} s after the kill")
    return {"tries": tries, "passed": passed, "slowest_seconds": worst,
            "results": [{**r, "ends": {str(k): v for k, v in r["ends"].items()}} for r in results]}


def throughput(out):
    path = f"{out}/throughput.json"
    r = run([LINK_THROUGHPUT, "--json", path])
    log("\n" + r.stdout)
    return json.load(open(path))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", default="out/ranks")
    ap.add_argument("--only", default="equivalence,schedule,faults,throughput")
    ap.add_argument("--tries", type=int, default=20)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    summary = {}
    for part in args.only.split(","):
        log(f"== {part}")
        if part == "equivalence":
            summary[part] = equivalence(args.out)
        elif part == "schedule":
            summary[part] = schedule(args.out)
        elif part == "faults":
            summary[part] = faults(args.out, args.tries)
        elif part == "throughput":
            summary[part] = throughput(args.out)
        else:
            sys.exit(f"--only: unknown part {part!r}")
    json.dump(summary, open(f"{args.out}/summary.json", "w"), indent=2)


if __name__ == "__main__":
    main()
