"""PipelineStage and Schedule: three processes over the caller's Gloo group."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import sparselink as sl

BATCH, M, STEPS = 24, 4, 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model():
    torch.manual_seed(5)
    return [torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU()),
            torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU()),
            torch.nn.Linear(32, 2)]


def data():
    torch.manual_seed(9)
    x = torch.randn(BATCH, 16)
    return x, (x[:, 0] > 0).long()


LOSSLESS = dict(keep=1.0, keep_full=1.0, full_codec="fp32", gradient_codec="fp32")


def rank_main(rank, port, out_dir, schedule, routing):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=3)
    module = model()[rank]
    stage = sl.PipelineStage(module, **routing)
    sched = sl.Schedule(stage, M, schedule=schedule,
                        loss_fn=torch.nn.functional.cross_entropy if rank == 2 else None)
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    x, y = data()
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        got = sched.step(x if rank == 0 else None, target=y if rank == 2 else None)
        losses += got or []
        opt.step()
    torch.save({"params": [p.detach() for p in module.parameters()], "losses": losses,
                "wire": stage.wire_bytes, "dense": stage.dense_bytes},
               os.path.join(out_dir, f"{schedule}-{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def run(tmp_path, schedule, routing):
    mp.start_processes(rank_main, args=(free_port(), str(tmp_path), schedule, routing),
                       nprocs=3, join=True, start_method="spawn")
    return [torch.load(tmp_path / f"{schedule}-{r}.pt") for r in range(3)]


def reference():
    stages = model()
    params = [p for s in stages for p in s.parameters()]
    opt = torch.optim.SGD(params, lr=0.5)
    x, y = data()
    for _ in range(STEPS):
        opt.zero_grad()
        for xm, ym in zip(x.chunk(M), y.chunk(M)):
            out = xm
            for s in stages:
                out = s(out)
            (torch.nn.functional.cross_entropy(out, ym) / M).backward()
        opt.step()
    return [[p.detach() for p in s.parameters()] for s in stages]


def test_lossless_pipeline_equals_one_process_and_schedules_agree(tmp_path):
    gpipe = run(tmp_path, "gpipe", LOSSLESS)
    one_f = run(tmp_path, "1f1b", LOSSLESS)
    for r, expected in enumerate(reference()):
        for a, b, e in zip(gpipe[r]["params"], one_f[r]["params"], expected):
            assert torch.equal(a, b)  # the same sums in the same order
            torch.testing.assert_close(a, e, atol=1e-6, rtol=1e-5)
    assert len(gpipe[2]["losses"]) == STEPS * M


def test_routed_pipeline_trains_on_fewer_bytes(tmp_path):
    res = run(tmp_path, "1f1b", dict(keep=0.25))
    losses = res[2]["losses"]
    assert sum(losses[-M:]) < sum(losses[:M])
    # int8, a quarter kept, plus each packet's header, index and scales (6 x 32 per packet)
    assert 0 < res[0]["wire"] < res[0]["dense"] / 3
    assert 0 < res[2]["wire"] < res[2]["dense"] / 3


def test_bad_arguments_are_refused():
    with pytest.raises(RuntimeError, match="init_process_group"):
        sl.PipelineStage(torch.nn.Linear(2, 2))
