"""sparselink: routed, sparse tensors across the boundaries between a network's layers.

The C++ library behind it routes the most sensitive entries of an activation, encodes them
into a checksummed packet, and brings the gradient back at the same positions. From Python:

* ``RoutedBoundary``: a ``torch.nn.Module`` to insert between two layers; forward routes the
  activation through a real packet, backward routes the gradient back (docs/python.md);
* ``encode`` / ``decode`` / ``inspect``, ``encode_gradient`` / ``decode_gradient``: the
  packet codec on tensors and bytes;
* ``SensitivityMap``: per-neuron importance that ``encode`` can score by;
* ``ProcessGroupTransport``: sparselink's links over your own ``torch.distributed`` group;
* ``PipelineStage`` and ``Schedule``: a module per rank, micro-batches in GPipe or 1F1B order,
  routed packets between the stages (the shape of ``torch.distributed.pipelining``).

Errors are Python exceptions whose message names the field and the value: ``ValueError``
(bad arguments, shapes and packets, NaN or Inf), ``TypeError`` (wrong types),
``RuntimeError`` (what torch's own checks refuse, such as a tensor on another device),
``TimeoutError``, ``ConnectionError`` (a closed link or a dead peer), ``MemoryError`` (a
refused size).
"""

from __future__ import annotations

import torch  # before the extension: it needs libtorch's symbols loaded

from . import _sparselink
from ._boundary import RoutedBoundary, default_options
from ._codec import (SensitivityMap, decode, decode_gradient, encode, encode_gradient,
                     inspect)
from ._pipeline import PipelineStage, Schedule
from ._transport import Link, ProcessGroupTransport

__all__ = [
    "RoutedBoundary",
    "default_options",
    "encode",
    "decode",
    "inspect",
    "encode_gradient",
    "decode_gradient",
    "SensitivityMap",
    "ProcessGroupTransport",
    "PipelineStage",
    "Schedule",
    "Link",
]
__version__ = "0.1.0"
