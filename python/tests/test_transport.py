"""Links over the caller's own torch.distributed group, in two processes."""
import os
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

import sparselink as sl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream(rank, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    t = sl.ProcessGroupTransport()  # the default group
    link = t.open_link(1 - rank, channel=3)
    sizes = [0, 1, 1000, 1 << 20, 3 << 20, 17]
    if rank == 0:
        for i, n in enumerate(sizes):
            link.send(bytes([i]) * n, dense_bytes=4 * n)
        result = link.stats()["wire_bytes"]
    else:
        got = [link.recv(timeout=30) for _ in sizes]
        result = all(g == bytes([i]) * n for i, (g, n) in enumerate(zip(got, sizes)))
        try:
            link.recv(timeout=0.2)
            result = "no timeout"
        except TimeoutError as e:
            result = result and "link.recv_timeout_ms = 200" in str(e)
    queue.put((rank, result, t.rank, t.world_size))
    dist.barrier()


def test_packets_cross_whole_and_in_order_over_the_callers_group():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(stream, args=(free_port(), queue), nprocs=2, join=True,
                       start_method="spawn")
    results = sorted(queue.get(timeout=10) for _ in range(2))
    assert results[0] == (0, sum([0, 1, 1000, 1 << 20, 3 << 20, 17]), 0, 2)
    assert results[1] == (1, True, 1, 2)


def dies(rank, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    link = sl.ProcessGroupTransport(dist.group.WORLD).open_link(1 - rank, channel=0)
    if rank == 1:
        os._exit(0)  # gone without a word
    try:
        link.recv(timeout=60)
        os._exit(2)
    except ConnectionError as e:
        os._exit(0 if "rank 1 is gone" in str(e) else 3)


def test_a_dead_peer_is_a_connection_error_naming_it():
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=dies, args=(r, port)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]


def test_bad_arguments_are_refused():
    with pytest.raises(RuntimeError, match="init_process_group"):
        sl.ProcessGroupTransport()
    with pytest.raises(TypeError):
        sl.ProcessGroupTransport("not a group")
