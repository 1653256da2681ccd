"""sparselink's links over the caller's torch.distributed process group."""

from __future__ import annotations

from typing import Dict

import torch.distributed as dist

from . import _sparselink


class Link:
    """One channel between this rank and a peer; packets arrive whole and in order."""

    def __init__(self, link: "_sparselink.Link") -> None:
        self._link = link

    def send(self, packet: bytes, *, dense_bytes: int = 0, timeout: float = 60.0) -> None:
        """Queues ``packet``; returns once it is handed to the group (TimeoutError if the
        window of sends stays full for ``timeout`` seconds, ConnectionError once closed)."""
        self._link.send(packet, dense_bytes, timeout)

    def recv(self, *, timeout: float = 60.0) -> bytes:
        """The next packet (TimeoutError after ``timeout`` seconds, ConnectionError when the
        peer closed the link or died)."""
        return self._link.recv(timeout)

    def close(self) -> None:
        self._link.close()

    def stats(self) -> Dict[str, float]:
        """Packets and bytes sent and received, and the crossing times the link measured."""
        return self._link.stats()


class ProcessGroupTransport:
    """sparselink's transport over ``group`` (``None``: the default group of
    ``torch.distributed.init_process_group``). Tags below ``2 * 2**24`` of the group are
    sparselink's while the transport lives."""

    def __init__(self, group: "dist.ProcessGroup | None" = None, *,
                 message_bytes: int = 1 << 20, max_messages_in_flight: int = 16) -> None:
        if group is None:
            if not dist.is_initialized():
                raise RuntimeError("ProcessGroupTransport: call torch.distributed."
                                   "init_process_group first, or pass a group")
            group = dist.group.WORLD
        self._transport = _sparselink.ProcessGroupTransport(group, message_bytes,
                                                            max_messages_in_flight)

    @property
    def rank(self) -> int:
        return self._transport.rank

    @property
    def world_size(self) -> int:
        return self._transport.world_size

    def open_link(self, peer: int, channel: int, *, max_packet_bytes: int = 1 << 30) -> Link:
        """The endpoint of ``channel`` to ``peer``; both ranks open it with the same number."""
        return Link(self._transport.open_link(peer, channel, max_packet_bytes))
