"""Pipeline stages over the caller's torch.distributed group, in the shape of
torch.distributed.pipelining: a stage is a module and its place in the pipeline; a schedule
runs micro-batches through the stages (GPipe or 1F1B) in ``step()``.

What crosses each boundary is a sparselink packet: the activation's kept entries (``keep`` of
each sample, chosen by magnitude or by the sender's sensitivity map) forward, the gradient at
the same entries backward. The sender's map learns from the gradients that come back.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

import torch
import torch.distributed as dist

from ._codec import SensitivityMap, decode, decode_gradient, encode, encode_gradient
from ._transport import ProcessGroupTransport

SCHEDULES = ("gpipe", "1f1b")


class PipelineStage:
    """Stage ``stage_index`` of ``num_stages`` (defaults: this rank of ``group`` and its size),
    running ``module``. Stage i talks to stages i - 1 and i + 1, which are ranks i - 1 and
    i + 1 of ``group``.

    ``input_shape`` is the shape of one sample of this stage's input when it is not flat (the
    packet carries ``rows x cols``). Routing: ``keep`` (share of each sample's entries sent),
    ``keep_full`` of them in ``full_codec``, the rest in ``lossy_codec``; ``scoring`` is
    ``"magnitude"`` or ``"sensitivity"`` (the sender's map, learned from the gradients that
    come back: only at the entries that crossed, since this stage has no receiver summaries
    yet, so the kept set tends to stay); the gradient in ``gradient_codec``. ``keep=1.0, keep_full=1.0,
    full_codec="fp32", gradient_codec="fp32"`` is lossless."""

    def __init__(self, module: torch.nn.Module, stage_index: Optional[int] = None,
                 num_stages: Optional[int] = None, *, group: "dist.ProcessGroup | None" = None,
                 input_shape: Optional[Sequence[int]] = None, keep: float = 0.1,
                 keep_full: float = 0.0, full_codec: str = "fp16", lossy_codec: str = "int8",
                 gradient_codec: str = "int8", scoring: str = "magnitude",
                 timeout: float = 60.0) -> None:
        self.transport = ProcessGroupTransport(group)
        self.index = self.transport.rank if stage_index is None else stage_index
        self.num_stages = self.transport.world_size if num_stages is None else num_stages
        if self.num_stages != self.transport.world_size:
            raise ValueError(f"num_stages = {self.num_stages}: must equal the group's size "
                             f"{self.transport.world_size} (one stage per rank)")
        if self.index != self.transport.rank:
            raise ValueError(f"stage_index = {self.index}: must equal this rank "
                             f"{self.transport.rank} of the group")
        if scoring not in ("sensitivity", "magnitude"):
            raise ValueError(f"scoring = '{scoring}': must be one of sensitivity, magnitude")
        self.module = module
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.routing = dict(keep=keep, keep_full=keep_full, full_codec=full_codec,
                            lossy_codec=lossy_codec)
        self.gradient_codec = gradient_codec
        self.scoring = scoring
        self.timeout = timeout
        self.map: Optional[SensitivityMap] = None  # sized at the first send
        i = self.index
        # Boundary b (between stages b and b + 1): channel 2b forward, 2b + 1 backward.
        self._from_prev = self.transport.open_link(i - 1, 2 * (i - 1)) if i > 0 else None
        self._grad_to_prev = self.transport.open_link(i - 1, 2 * (i - 1) + 1) if i > 0 else None
        last = i == self.num_stages - 1
        self._to_next = None if last else self.transport.open_link(i + 1, 2 * i)
        self._grad_from_next = None if last else self.transport.open_link(i + 1, 2 * i + 1)
        self.wire_bytes = 0   # packets this stage sent
        self.dense_bytes = 0  # the same tensors as plain fp32

    @property
    def is_first(self) -> bool:
        return self.index == 0

    @property
    def is_last(self) -> bool:
        return self.index == self.num_stages - 1

    def _send(self, link, packet: bytes, dense: int) -> None:
        link.send(packet, dense_bytes=dense, timeout=self.timeout)
        self.wire_bytes += len(packet)
        self.dense_bytes += dense

    def forward_one(self, x: Optional[torch.Tensor], step: int, micro: int):
        """One micro-batch forward: returns what backward_one needs."""
        packet_in = None
        if not self.is_first:
            packet_in = self._from_prev.recv(timeout=self.timeout)
            x = decode(packet_in)
            if self.input_shape is not None:
                x = x.reshape(x.shape[0], *self.input_shape)
            x.requires_grad_()
        out = self.module(x)
        packet_out = None
        if not self.is_last:
            flat = out.detach().reshape(out.shape[0], -1).float()
            if self.map is None and self.scoring == "sensitivity":
                self.map = SensitivityMap(flat.shape[1])
            packet_out = encode(flat.contiguous(), scoring=self.scoring, map=self.map,
                                step=step, micro_batch=micro, boundary=self.index,
                                **self.routing)
            self._send(self._to_next, packet_out, flat.numel() * 4)
        return x, out, packet_in, packet_out

    def backward_one(self, saved, loss: Optional[torch.Tensor]) -> None:
        """One micro-batch backward (the last stage passes its loss)."""
        x, out, packet_in, packet_out = saved
        if self.is_last:
            loss.backward()
        else:
            grad = decode_gradient(self._grad_from_next.recv(timeout=self.timeout), packet_out)
            if self.map is not None:
                self.map.update(out.detach().reshape(grad.shape).float().contiguous(), grad)
            out.backward(grad.reshape(out.shape).to(out.dtype))
        if not self.is_first:
            g = x.grad.reshape(x.shape[0], -1).float().contiguous()
            self._send(self._grad_to_prev, encode_gradient(g, packet_in,
                                                           codec=self.gradient_codec),
                       g.numel() * 4)


class Schedule:
    """Runs ``n_microbatches`` micro-batches of a batch through the stages, in ``schedule``
    order (``"gpipe"``: every forward, then every backward; ``"1f1b"``: one forward, one
    backward, after a warm-up of num_stages - stage - 1 forwards). Gradients accumulate over
    the micro-batches, each loss scaled by 1 / n_microbatches; call your optimizer after
    ``step``."""

    def __init__(self, stage: PipelineStage, n_microbatches: int, *, schedule: str = "1f1b",
                 loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None
                 ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule = '{schedule}': must be one of {', '.join(SCHEDULES)}")
        if not isinstance(n_microbatches, int) or n_microbatches < 1:
            raise ValueError(f"n_microbatches = {n_microbatches!r}: must be an integer >= 1")
        if stage.is_last and loss_fn is None:
            raise ValueError("loss_fn: the last stage needs one")
        self.stage, self.m, self.schedule, self.loss_fn = stage, n_microbatches, schedule, loss_fn
        self.steps = 0

    def _order(self) -> List[Any]:
        m, s, i = self.m, self.stage.num_stages, self.stage.index
        if self.schedule == "gpipe":
            return [("F", k) for k in range(m)] + [("B", k) for k in range(m)]
        warm = min(s - i - 1, m)
        order = [("F", k) for k in range(warm)]
        for k in range(m - warm):
            order += [("F", warm + k), ("B", k)]
        return order + [("B", k) for k in range(m - warm, m)]

    def step(self, x: Optional[torch.Tensor] = None,
             target: Optional[torch.Tensor] = None) -> Optional[List[float]]:
        """The first stage passes the batch ``x``, the last its ``target``; returns the last
        stage's loss per micro-batch (None elsewhere)."""
        st = self.stage
        if st.is_first and x is None:
            raise ValueError("x: the first stage needs the batch")
        if st.is_last and target is None:
            raise ValueError("target: the last stage needs it")
        xs = list(x.chunk(self.m)) if st.is_first else [None] * self.m
        ts = list(target.chunk(self.m)) if st.is_last else [None] * self.m
        if (st.is_first and len(xs) != self.m) or (st.is_last and len(ts) != self.m):
            raise ValueError(f"batch: cannot be cut into n_microbatches = {self.m} parts")
        saved, losses = {}, []
        for kind, k in self._order():
            if kind == "F":
                saved[k] = st.forward_one(xs[k], self.steps, k)
            else:
                loss = None
                if st.is_last:
                    loss = self.loss_fn(saved[k][1], ts[k]) / self.m
                    losses.append(loss.item() * self.m)
                st.backward_one(saved.pop(k), loss)
        self.steps += 1
        return losses if st.is_last else None
