"""The numerics policy every per-datum op follows, written once.

* **Accumulation**: reductions over float16/bfloat16 data accumulate in float32.
* **Scale-safe norms**: a datum's Lp norm is taken of the datum scaled by a
  power of two, chosen from its largest magnitude, whenever that magnitude is
  so small or so large that its p-th power would underflow or overflow (float32
  data of norm 1e-30 or 1e30 normalize to unit norm). A power of two scales
  exactly, so for every other datum the result is bit for bit the unscaled one.
* **Non-finite data**: a datum holding a NaN or an inf maps to a datum of NaNs,
  never to a finite step (an elementwise op: such an element maps to NaN).

Both policies cost extra passes over the data only where they are needed: on
the CPU, in eager mode, the lift first checks on the host (one small reduction
and a sync) whether any datum needs them. Where a sync is unwanted or
impossible (CUDA, ``torch.func`` transforms, DTensors) the extra work is done
unconditionally, with the same result. Under ``torch.compile`` a norm of
float32 or half-precision data is accumulated in float64, which is scale-safe in
one fused pass (the result then differs from eager by rounding only).
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch

from paramtx._lift.dtensor import is_dtensor, transforms_active

Dims = Union[int, tuple[int, ...]]
"""The dims a datum spans: ``-1`` for rows, the datum dims of a DTensor."""

# Under a scale-safe p-norm, sums of up to 2**_SUM_HEADROOM_BITS terms may not overflow.
_SUM_HEADROOM_BITS = 40


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype reductions over data of ``dtype`` are computed in."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def rounded_towards_zero(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``value`` (computed in a wider dtype) in ``dtype``, each element rounded towards zero.

    No magnitude grows, so no Lp norm grows (a projection's result stays in its
    ball); and an element strictly between two numbers ``dtype`` holds (a box's
    bounds) stays between them.
    """
    if dtype == value.dtype:
        return value
    rounded = value.to(dtype)
    # one step towards 0 where rounding grew the magnitude: towards ``rounded * 0`` there,
    # towards ``rounded`` itself (no step) elsewhere (cheaper than a masked select)
    kept = (rounded.to(value.dtype).abs() <= value.abs()).to(dtype)
    return torch.nextafter(rounded, rounded * kept)


def may_inspect(x: torch.Tensor) -> bool:
    """Whether the lift may read values of ``x`` on the host to skip work it does not need.

    Only for plain CPU tensors in eager mode: elsewhere a sync is expensive
    (CUDA), breaks a graph (``torch.compile``) or is impossible (``vmap``).
    """
    # (transforms_active is False while compiling)
    return x.is_cpu and not transforms_active() and not torch.compiler.is_compiling() and not is_dtensor(x)


def all_finite(*tensors: torch.Tensor) -> bool:
    """Whether every element of every tensor is finite (a host sync; see :func:`may_inspect`).

    A sum is finite only if every term is: one cheap reduction per tensor. (A
    finite sum that overflows only sends the caller down its careful path.)
    """
    return all(math.isfinite(t.sum().item()) for t in tensors)


def datum_poison(x: torch.Tensor, dims: Dims) -> torch.Tensor:
    """Per datum, ``-0.0`` if every element is finite and NaN otherwise (kept as length-1 dims).

    Added to an op's output, it turns the output of every non-finite datum into
    NaNs and leaves the others unchanged, bit for bit: ``y + (-0.0)`` is ``y``
    for every ``y``, where ``+0.0`` would turn a ``-0.0`` into ``+0.0``.
    (``amax`` and ``amin`` propagate NaN; ``inf * 0`` is NaN.)
    """
    return x.amax(dims, keepdim=True).abs() * -0.0 + x.amin(dims, keepdim=True).abs() * -0.0


def element_poison(x: torch.Tensor) -> torch.Tensor:
    """Per element, ``0`` if finite and NaN otherwise (``x * 0``)."""
    return x * 0


class ScaledNorm:
    """A datum's scale-safe Lp norm: ``y = x * scale`` and ``norm = ||y||_p`` per datum.

    ``scale`` is a power of two per datum (a tensor), or the float ``1.0`` when
    no datum needs scaling (then ``y`` is ``x`` itself). ``poison`` is, per datum,
    0 if the datum is finite and NaN if not (as :func:`datum_poison`), or ``None``
    if every datum is known finite.
    """

    __slots__ = ("y", "norm", "scale", "poison")

    def __init__(
        self, y: torch.Tensor, norm: torch.Tensor, scale: Union[torch.Tensor, float], poison: Optional[torch.Tensor]
    ) -> None:
        self.y, self.norm, self.scale, self.poison = y, norm, scale, poison


# float64 holds every p-th power (p <= _WIDE_MAX_ORDER) of a finite float32, bfloat16 or
# float16 value, and any sum of 2**40 of them, as a finite number (a subnormal, for p near 7).
_WIDE = {torch.float16: torch.float64, torch.bfloat16: torch.float64, torch.float32: torch.float64}
_WIDE_MAX_ORDER = 7.0

# (smallest normal exponent, largest exponent, mantissa bits) of the accumulation dtypes
_EXPONENTS = {torch.float32: (-126, 127, 23), torch.float64: (-1022, 1023, 52)}


def _exponent_window(p: float, acc: torch.dtype) -> tuple[float, float]:
    """Exponents ``e`` of the largest magnitude ``m = 2**e`` for which ``||x||_p`` is
    safe unscaled: ``m**p`` stays a normal number with room for the mantissa's
    bits below it, and ``D * m**p`` does not overflow for ``D <= 2**40``."""
    emin, emax, mantissa = _EXPONENTS[acc]
    return math.ceil((emin + mantissa + 1) / p), math.floor((emax - _SUM_HEADROOM_BITS) / p)


def scaled_norm(x: torch.Tensor, p: float, dims: Dims, inspect: bool) -> ScaledNorm:
    """The scale-safe Lp norm of each datum of ``x`` (see :class:`ScaledNorm`).

    With ``inspect`` (see :func:`may_inspect`), the plain norm is taken first
    and kept when it shows that no datum needed scaling and all are finite;
    otherwise, and always without ``inspect``, the largest magnitude of each
    datum picks its scale.
    """
    acc = accumulation_dtype(x.dtype)
    wide = _WIDE.get(x.dtype)
    if wide is not None and p <= _WIDE_MAX_ORDER and torch.compiler.is_compiling():
        # Compiled, the cast fuses into the reduction: a sum of p-th powers in a type
        # whose range holds every p-th power of the data's is scale-safe in one pass,
        # and non-finite only for non-finite data.
        norm = torch.linalg.vector_norm(x, ord=p, dim=dims, keepdim=True, dtype=wide)
        # (the ops divide in the accumulation dtype: the norm of float32 data fits it but
        # past 3e38, and float64 arithmetic over every element would cost a third more)
        return ScaledNorm(x, norm.to(acc), 1.0, (norm * 0).to(acc))
    if p == math.inf:  # the largest magnitude: exact in any range
        norm = torch.linalg.vector_norm(x, ord=p, dim=dims, keepdim=True, dtype=acc)
        finite = inspect and math.isfinite(norm.max().item())
        return ScaledNorm(x, norm, 1.0, None if finite else norm * 0)
    low, high = _exponent_window(p, acc)
    norm = None
    if inspect:
        norm = torch.linalg.vector_norm(x, ord=p, dim=dims, keepdim=True, dtype=acc)
        if _trusted(norm, p, x, dims, low, high):
            return ScaledNorm(x, norm, 1.0, None)
    largest = torch.maximum(x.amax(dims, keepdim=True), -x.amin(dims, keepdim=True)).to(acc)
    poison = largest * 0
    exponent = torch.floor(torch.log2(largest))
    emin, emax, _ = _EXPONENTS[acc]
    # 2**-exponent must itself be a normal number: the clamp only binds for
    # subnormal data, which it still lifts far enough.
    exponent = exponent.clamp(-emax, -emin)
    unscaled = (exponent >= low) & (exponent <= high) | ~torch.isfinite(largest) | (largest == 0)
    scale = torch.where(unscaled, 1.0, torch.exp2(-exponent))
    if inspect and norm is not None and bool(unscaled.all()):
        # zero (or non-finite) data only: nothing to rescale
        return ScaledNorm(x, norm, 1.0, None if bool(torch.isfinite(largest).all()) else poison)
    y = x * scale
    return ScaledNorm(y, torch.linalg.vector_norm(y, ord=p, dim=dims, keepdim=True, dtype=acc), scale, poison)


def _trusted(norm: torch.Tensor, p: float, x: torch.Tensor, dims: Dims, low: float, high: float) -> bool:
    """Whether every computed norm proves its datum finite and inside the safe window.

    ``||x||_inf <= ||x||_p <= D**(1/p) ||x||_inf``, so a norm in
    ``[D**(1/p) 2**low, 2**high]`` puts the largest magnitude in ``[2**low,
    2**high]``; a norm that under- or overflowed, or a zero norm (zero data, or
    data too small to square), falls outside and is re-examined.
    """
    size = x.numel() // max(1, norm.numel())
    smallest, largest = torch.aminmax(norm)  # one small kernel; NaN propagates into both
    return smallest.item() >= size ** (1.0 / p) * 2.0**low and largest.item() <= 2.0**high
