"""RoutedBoundary: a torch.nn.Module that routes what crosses it (sparselink's adapter)."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from . import _sparselink


def default_options() -> Dict[str, Any]:
    """The C++ adapter's defaults (RoutedBoundaryOptions), by option name."""
    return _sparselink.default_options()


class RoutedBoundary(torch.nn.Module):
    """Routes the activation ``[N, ...]`` that crosses it, and its gradient on the way back.

    In training, forward keeps each sample's most sensitive entries (``keep``, or a keep the
    sender and receiver negotiate every ``negotiate_every`` steps when ``keep`` is None),
    encodes them into a real packet, decodes it and returns the dense tensor the next layer
    sees (zeros where dropped). Backward sends the gradient at the kept positions in
    ``gradient_codec``: the exact gradient of the routed forward up to that codec's rounding.
    Both run in C++ (the autograd function is the adapter's own). In eval mode, or without
    autograd, forward routes the same way and counts nothing.

    A step ends at the next training forward (``auto_step=True``), or when you call
    ``step_end()`` after ``optimizer.step()``. The options mirror the C++
    ``RoutedBoundaryOptions`` with the same defaults; ``report()`` gives the bytes, the
    contract in force, the negotiation history and the time by phase.

    Inputs must be on the CPU; any floating dtype is routed as float32 and comes back in its
    own dtype. NaN or Inf in the activation raises ValueError naming the boundary (in its
    gradient, backward raises RuntimeError). The autograd graph keeps the boundary alive, so
    backward works even after the module is gone.
    """

    def __init__(self, *, policy: str = "sensitivity", keep: Optional[float] = None,
                 keep_full: float = 0.0, full_codec: str = "fp16", lossy_codec: str = "int8",
                 gradient_codec: str = "int8", index_codec: str = "auto", zstd: bool = False,
                 zstd_level: int = -5, eps: float = 1e-3, per_channel_maps: bool = True,
                 negotiate_every: int = 50, summary_every: int = 10, tau_send: float = 0.9,
                 tau_recv: float = 0.9, keep_min: float = 0.01, keep_max: float = 1.0,
                 hysteresis: float = 0.005, initial_keep: float = 0.1,
                 link_budget_bytes_per_step: float = 0.0, sensitivity_mode: str = "taylor",
                 sensitivity_alpha: float = 0.5, ema_decay: float = 0.9,
                 link_bandwidth_bits_per_s: float = 0.0, seed: int = 1,
                 auto_step: bool = True) -> None:
        super().__init__()
        options = dict(
            policy=policy, keep=keep, keep_full=keep_full, full_codec=full_codec,
            lossy_codec=lossy_codec, gradient_codec=gradient_codec, index_codec=index_codec,
            zstd=zstd, zstd_level=zstd_level, eps=eps, per_channel_maps=per_channel_maps,
            negotiate_every=negotiate_every, summary_every=summary_every, tau_send=tau_send,
            tau_recv=tau_recv, keep_min=keep_min, keep_max=keep_max, hysteresis=hysteresis,
            initial_keep=initial_keep, link_budget_bytes_per_step=link_budget_bytes_per_step,
            sensitivity_mode=sensitivity_mode, sensitivity_alpha=sensitivity_alpha,
            ema_decay=ema_decay, link_bandwidth_bits_per_s=link_bandwidth_bits_per_s, seed=seed)
        self._impl = _sparselink.Boundary(options)
        self.auto_step = auto_step
        self._open_step = False  # a training forward ran since the last step_end

    def forward(self, activation: torch.Tensor) -> torch.Tensor:
        if not isinstance(activation, torch.Tensor):
            raise TypeError(f"activation: must be a torch.Tensor, got {type(activation).__name__}")
        if not activation.is_floating_point():
            raise TypeError(f"activation.dtype = {activation.dtype}: must be a floating dtype")
        training = self.training and torch.is_grad_enabled()
        if training and self.auto_step and self._open_step:
            self.step_end()
        out = self._impl.forward(activation, self.training)
        if training:
            self._open_step = True
        return out

    def step_end(self) -> None:
        """Ends the step: the sender's map takes the step's gradients, and every
        ``negotiate_every`` steps the contract is renegotiated."""
        self._impl.step_end()
        self._open_step = False

    def freeze(self, frozen: bool = True) -> None:
        """Freeze (or thaw) the sensitivity maps and the contract."""
        self._impl.freeze(frozen)

    @property
    def steps(self) -> int:
        """Steps ended so far."""
        return self._impl.steps

    def report(self) -> Optional[Dict[str, Any]]:
        """Bytes, packets, contract, history and time by phase; None before the first forward."""
        return self._impl.report()

    def extra_repr(self) -> str:
        return f"steps={self.steps}"
