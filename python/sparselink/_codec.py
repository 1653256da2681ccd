"""The packet codec and sensitivity maps (sparselink's wire format: docs/wire-format.md)."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from . import _sparselink


class SensitivityMap:
    """Per-neuron (or per-block) importance in [0, 1], learned from activations and gradients.

    ``update(a, g)`` folds one batch of ``a`` and ``g`` (both ``rows x num_neurons`` float32)
    into an exponential moving average of the Taylor score ``|a * g|`` (``mode="taylor"``),
    ``|g|`` (``"gradient"``) or a weighted mix (``"weighted"``, ``alpha``).
    """

    def __init__(self, num_neurons: int, *, block: int = 1, mode: str = "taylor",
                 alpha: float = 0.5, ema_decay: float = 0.9) -> None:
        self._map = _sparselink.SensitivityMap(num_neurons, block, mode, alpha, ema_decay)

    def update(self, activation: torch.Tensor, gradient: torch.Tensor) -> None:
        """Folds one batch into the map. Raises ValueError on a shape mismatch or NaN/Inf."""
        self._map.update(activation, gradient)

    def assign(self, values: torch.Tensor) -> None:
        """Replaces the map with ``values`` (``num_units`` float32 values in [0, 1])."""
        self._map.assign(values)

    def values(self) -> torch.Tensor:
        """The normalized map, one float32 per unit (a copy)."""
        return self._map.values()

    def freeze(self) -> None:
        """Refuse further updates (inference)."""
        self._map.freeze()

    @property
    def num_units(self) -> int:
        return self._map.num_units

    @property
    def num_neurons(self) -> int:
        return self._map.num_neurons


def encode(activation: torch.Tensor, *, keep: float, keep_full: float = 1.0,
           full_codec: str = "fp32", lossy_codec: str = "int8", index_codec: str = "auto",
           rest: str = "drop", scoring: str = "magnitude",
           map: Optional[SensitivityMap] = None, step: int = 0, boundary: int = 0,
           micro_batch: int = 0, contract_version: int = 0, zstd: bool = False,
           zstd_level: int = 3, seed: int = 0) -> bytes:
    """Routes ``activation`` (``rows x cols`` float32 on the CPU) and returns its packet.

    Each row keeps ``floor(cols * keep)`` entries, chosen by ``scoring`` (``"magnitude"``:
    largest ``|a|``; ``"sensitivity"``: ``|a| * (eps + S)`` with ``map``; ``"random"``), of
    which the share ``keep_full`` goes in ``full_codec`` and the rest in ``lossy_codec``
    (``fp32``, ``fp16``, ``bf16``, ``int8``, ``int4``). ``rest`` is ``"drop"`` or ``"sign1"``.
    The bytes are the C++ library's, bit for bit.
    """
    return _sparselink.encode(activation, keep, keep_full, full_codec, lossy_codec, index_codec,
                              rest, scoring, None if map is None else map._map, step, boundary,
                              micro_batch, contract_version, zstd, zstd_level, seed)


def decode(packet: bytes) -> torch.Tensor:
    """The dense ``rows x cols`` float32 tensor of an activation packet (zeros where dropped).

    Checks the checksum, every length and the decode budget first: ValueError names what is
    wrong with a corrupt or truncated packet.
    """
    return _sparselink.decode(packet)


def inspect(packet: bytes) -> Dict[str, Any]:
    """The packet's header, section table, sizes and checksum status, as a dict."""
    return _sparselink.inspect(packet)


def encode_gradient(gradient: torch.Tensor, activation_packet: bytes, *,
                    codec: str = "int8") -> bytes:
    """The gradient packet of ``gradient`` (``rows x cols`` float32, the gradient of the loss
    with respect to the tensor ``activation_packet`` decoded to) at the entries that packet
    kept: the receiving end's way back. Both ends hold the activation packet, so no index
    crosses again."""
    return _sparselink.encode_gradient(gradient, activation_packet, codec)


def decode_gradient(packet: bytes, activation_packet: bytes) -> torch.Tensor:
    """The dense gradient (zeros where the activation was dropped) of a gradient packet, on
    the end that sent ``activation_packet``."""
    return _sparselink.decode_gradient(packet, activation_packet)
