"""Two stages of a model in two processes, over your own torch.distributed group.

Rank 0 runs the first half, rank 1 the second half and the loss; 4 micro-batches per step in
1F1B order. The activation crosses as a sparselink packet (10 % of each sample's entries,
int8), the gradient comes back at the same entries, over the Gloo group init_process_group
made.

    /usr/bin/python3 examples/python/two_process_pipeline.py      # spawns both ranks here
"""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import sparselink as sl

STEPS, BATCH, WIDTH = 60, 64, 512


def run(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)  # the same data on both ranks
    x = torch.randn(BATCH, 32)
    y = (x[:, :4].sum(1) > 0).long()
    torch.manual_seed(rank + 1)
    if rank == 0:
        module = torch.nn.Sequential(torch.nn.Linear(32, WIDTH), torch.nn.ReLU())
    else:
        module = torch.nn.Linear(WIDTH, 2)
    stage = sl.PipelineStage(module, keep=0.1)  # stage = this rank of the default group
    schedule = sl.Schedule(stage, n_microbatches=4, schedule="1f1b",
                           loss_fn=torch.nn.functional.cross_entropy)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    for step in range(STEPS):
        opt.zero_grad()
        losses = schedule.step(x if rank == 0 else None, target=y if rank == 1 else None)
        opt.step()
        if rank == 1 and step in (0, STEPS - 1):
            print(f"step {step:2d}: loss {sum(losses) / len(losses):.3f}, {stage.wire_bytes} "
                  f"gradient bytes sent so far (dense {stage.dense_bytes})", flush=True)
    if rank == 0:
        print(f"rank 0 sent {stage.wire_bytes} activation bytes (dense {stage.dense_bytes})",
              flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(run, args=(29600 + os.getpid() % 1000,), nprocs=2, join=True)
