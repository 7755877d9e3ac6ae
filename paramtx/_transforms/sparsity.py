"""Top-q's sparsity levels: ``keep = round((1 - q) * D)``, and with ``dq > 0`` traced random draws of ``q``.

With ``dq > 0`` each update leaf draws its own ``q`` per step, uniformly from
``[max(0, q - dq), min(1, q + dq)]``. The draw is a counter-based hash of the
stream's ``(seed, count)`` and the leaf's index, computed in integer tensor
ops: it traces under ``torch.compile`` and ``torch.func`` (no host sync, no
global RNG), gives the same numbers on every device (exact integer arithmetic,
then IEEE float64 ``+``/``*``), and a stream restored from a saved ``(seed,
count)`` continues with the same draws.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from paramtx._core.validate import UNIT_INTERVAL, nan_where_invalid
from paramtx._lift.settings import PerDatum, poison_of

_MASK32 = 0xFFFFFFFF
# lowbias32 (C. Wellons' hash-prospector): a 32-bit bijection with low bias.
_MULTIPLIERS = (0x7FEB352D, 0x846CA68B)
_GOLDEN = 0x9E3779B9


def _mul32(x: torch.Tensor, multiplier: int) -> torch.Tensor:
    """``x * multiplier mod 2**32`` for ``0 <= x < 2**32`` held in int64, without int64 overflow."""
    low, high = multiplier & 0xFFFF, multiplier >> 16
    return (x * low + ((x * high) & 0xFFFF) * 0x10000) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, _MULTIPLIERS[0])
    x = x ^ (x >> 15)
    x = _mul32(x, _MULTIPLIERS[1])
    return x ^ (x >> 16)


def hash32(seed: torch.Tensor, count: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """A 32-bit hash (in int64) of the non-negative int64 ``seed``, ``count`` and ``index`` (broadcast)."""
    h = _mix32((index & _MASK32) ^ _GOLDEN)
    for word in (count & _MASK32, count >> 32, seed & _MASK32, seed >> 32):
        h = _mix32(h ^ word)
    return h


def uniforms(seed: torch.Tensor, count: torch.Tensor, size: int) -> torch.Tensor:
    """``size`` float64 draws in ``(0, 1)`` for step ``count`` of the stream ``seed``."""
    index = torch.arange(size, dtype=torch.int64, device=seed.device)
    return (hash32(seed, count, index).to(torch.float64) + 0.5) * 2.0**-32


def levels(q: float, dq: float, seed: torch.Tensor, count: torch.Tensor, size: int) -> Optional[torch.Tensor]:
    """``size`` sparsity levels for one step, uniform on ``[max(0, q-dq), min(1, q+dq)]``;
    ``None`` when ``dq == 0`` (the level is ``q`` itself)."""
    if dq == 0.0:
        return None
    return level(q, dq, uniforms(seed, count, size))


def level(q: Union[float, torch.Tensor], dq: float, draw: torch.Tensor) -> torch.Tensor:
    """The level a uniform ``draw`` in ``(0, 1)`` picks on ``[max(0, q-dq), min(1, q+dq)]``
    (float64; ``q`` a number, or a float64 tensor of one per datum)."""
    if isinstance(q, torch.Tensor):
        return (q - dq).clamp(min=0.0) + ((q + dq).clamp(max=1.0) - (q - dq).clamp(min=0.0)) * draw
    low, high = max(0.0, q - dq), min(1.0, q + dq)
    return low + (high - low) * draw


def kept_count(q: float, datum_size: int) -> int:
    """``round((1 - q) * D)`` (Python's round, half to even): how many elements of a datum top-q keeps."""
    return round((1.0 - q) * datum_size)


def kept_counts(level: torch.Tensor, datum_size: int) -> torch.Tensor:
    """:func:`kept_count` of a drawn level, as an int64 tensor (``torch.round`` also rounds half to even)."""
    return torch.round((1.0 - level) * datum_size).to(torch.int64)


def keep_for(
    q: Union[float, torch.Tensor], dq: float, draw: Optional[torch.Tensor], datum_size: int
) -> tuple[Union[int, torch.Tensor, PerDatum], int]:
    """``(keep, bound)`` (see :func:`kept`) for ``q`` a number or a tensor of one per datum,
    and ``draw`` a uniform of the ``dq`` stream (``None`` when ``dq == 0``).

    For a tensor ``q`` (not read on the host), ``keep`` is a per-datum setting of int64
    counts and ``bound`` is ``D``: every datum is ranked whole, then masked by its own
    count. A datum whose ``q`` is NaN or outside ``[0, 1]`` comes out as NaNs.
    """
    if not isinstance(q, torch.Tensor):
        return kept(q, dq, None if draw is None else level(q, dq, draw), datum_size)
    q = nan_where_invalid(q, UNIT_INTERVAL).to(torch.float64)  # (as a Python float computes)
    drawn = q if draw is None else level(q, dq, draw)
    counts = torch.round((1.0 - drawn) * datum_size)
    return PerDatum(torch.nan_to_num(counts, nan=0.0).to(torch.int64), "q", poison=poison_of(drawn)), datum_size


def kept(q: float, dq: float, level: Optional[torch.Tensor], datum_size: int) -> tuple[Union[int, torch.Tensor], int]:
    """``(keep, bound)``: the count to keep per datum, and a static upper bound of it
    (the count at the lowest level ``q`` may be drawn from)."""
    if level is None:
        keep = kept_count(q, datum_size)
        return keep, keep
    return kept_counts(level, datum_size), kept_count(max(0.0, q - dq), datum_size)
