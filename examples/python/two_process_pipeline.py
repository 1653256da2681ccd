"""Two stages of a model in two processes, over your own torch.distributed group.

Rank 0 runs the first half, rank 1 the second half and the loss. The activation crosses as a
sparselink packet (the 10 % most important entries, int8), the gradient comes back at the
same positions, both through sparselink links over the Gloo group init_process_group made.

    /usr/bin/python3 examples/python/two_process_pipeline.py      # spawns both ranks here
"""
import os
import sys

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
    transport = sl.ProcessGroupTransport(dist.group.WORLD)
    forward = transport.open_link(1 - rank, channel=0)
    backward = transport.open_link(1 - rank, channel=1)
    torch.manual_seed(rank + 1)
    if rank == 0:
        stage = torch.nn.Sequential(torch.nn.Linear(32, WIDTH), torch.nn.ReLU())
        opt = torch.optim.SGD(stage.parameters(), lr=0.1)
        for step in range(STEPS):
            a = stage(x)
            packet = sl.encode(a.detach(), keep=0.1, keep_full=0.0, step=step)
            forward.send(packet, dense_bytes=a.numel() * 4)
            # The gradient at the entries that crossed, zeros elsewhere.
            grad = sl.decode_gradient(backward.recv(), packet)
            opt.zero_grad()
            a.backward(grad)
            opt.step()
    else:
        stage = torch.nn.Linear(WIDTH, 2)
        opt = torch.optim.SGD(stage.parameters(), lr=0.1)
        for step in range(STEPS):
            packet = forward.recv()
            a = sl.decode(packet).requires_grad_()
            loss = torch.nn.functional.cross_entropy(stage(a), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            backward.send(sl.encode_gradient(a.grad, packet, codec="int8"))
            if step in (0, STEPS - 1):
                print(f"step {step:2d}: loss {loss.item():.3f}, {len(packet)} bytes forward "
                      f"(dense {a.numel() * 4})", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    port = 29600 + os.getpid() % 1000
    mp.spawn(run, args=(port,), nprocs=2, join=True)
    sys.exit(0)
