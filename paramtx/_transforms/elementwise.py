"""Per-element transforms: ``scale``, ``add``, ``clamp``, ``sign``.

Each acts on every element of every update leaf independently, so
``param_ndim`` does not apply.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch

from paramtx._core import validate as _validate
from paramtx._core.base import GradientTransformation, rebuildable, stateless
from paramtx._lift import lift
from paramtx._lift.numerics import accumulation_dtype
from paramtx._lift.ops import DatumOp, Mapped, Result, Scaled
from paramtx._lift.settings import per_element
from paramtx._transforms.inject import schedulable

def _as_number_would_be(value: Any, dtype: torch.dtype) -> Any:
    # a tensor setting in the dtype the kernel casts a number to (a 0-d one casts itself):
    # torch.mul computes half precision in float32, torch.add casts the number to the data's dtype
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        return value.to(dtype)
    return value


SCALE = DatumOp(
    "scale",
    lambda x, *, factor: Scaled(x, _as_number_would_be(factor, accumulation_dtype(x.dtype))),
    elementwise=True,
    ieee=True,
)
"""``x * factor`` (a number, or a tensor that broadcasts against ``x``)."""

ADD = DatumOp(
    "add", lambda x, *, bias: Mapped(torch.add, (x, _as_number_would_be(bias, x.dtype))), elementwise=True, ieee=True
)
"""``x + bias`` (a number, or a tensor that broadcasts against ``x``)."""

def _clamp(x: torch.Tensor, *, low: Any, high: Any) -> Result:
    if isinstance(low, torch.Tensor) or isinstance(high, torch.Tensor):
        # torch.clamp takes two numbers or two tensors; tensor bounds in the dtype a
        # number would be cast to (the data's accumulation dtype), so the result is the same
        acc = accumulation_dtype(x.dtype)
        low, high = (None if b is None else torch.as_tensor(b, dtype=acc, device=x.device) for b in (low, high))
    return Mapped(torch.clamp, (x, low, high))


CLAMP = DatumOp("clamp", _clamp, elementwise=True)
"""``x`` clamped into ``[low, high]`` (either bound may be ``None``, a number or a tensor
that broadcasts against ``x``); NaN for a NaN or inf."""

SIGN = DatumOp("sign", lambda x: Mapped(torch.sign, (x,)), elementwise=True)
"""``sign(x)`` (``0`` stays ``0``); NaN for a NaN or inf."""


@schedulable("step_size")
@rebuildable
def scale(step_size: Union[float, torch.Tensor]) -> GradientTransformation:
    """Multiply every update by a constant: ``u -> step_size * u``.

    Scope: per element.

    Args:
        step_size: the factor; ``scale(-lr)`` turns a gradient into a descent step.
            A number, or a tensor broadcastable to every update leaf (a 0-d one
            may change between calls of a compiled step without a recompile;
            a NaN or infinite value gives NaN where it applies).

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.scale(-0.1)
        >>> tx.update([torch.tensor([1.0, -2.0])], tx.init(None))[0]
        [tensor([-0.1000,  0.2000])]
    """
    step_size = _validate.check_setting("scale", "step_size", step_size)
    factor = per_element("step_size", step_size)
    return stateless("scale", lambda u: lift.map_data("scale", SCALE, None, u, factor=factor))


@rebuildable
def add(bias: Union[float, torch.Tensor]) -> GradientTransformation:
    """Add a constant to every update: ``u -> u + bias`` (rai-toolbox's ``grad_bias``).

    Scope: per element. ``bias`` may be a tensor, as ``step_size`` of :func:`scale`.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.add(0.5)
        >>> tx.update([torch.tensor([1.0, -2.0])], tx.init(None))[0]
        [tensor([ 1.5000, -1.5000])]
    """
    bias = _validate.check_setting("add", "bias", bias)
    shift = per_element("bias", bias)
    return stateless("add", lambda u: lift.map_data("add", ADD, None, u, bias=shift))


@rebuildable
def clamp(
    min: Union[float, torch.Tensor, None] = None, max: Union[float, torch.Tensor, None] = None
) -> GradientTransformation:
    """Clamp every update into ``[min, max]``; either bound may be ``None``.

    Scope: per element. A NaN or infinite element maps to NaN (see the README's
    numerics policy), never to a bound. A bound may be a tensor broadcastable
    to every update leaf (torch's broadcasting; a 0-d tensor may change between
    steps of a compiled step without a recompile); its values are not read on
    the host: an element whose ``min > max`` (or whose bound is NaN) maps to NaN.

    Raises:
        ValueError: if both bounds are ``None`` or ``min > max`` (numbers).

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.clamp(max=2.8)
        >>> tx.update([torch.tensor([1.0, 2.0, 3.0, float("inf")])], tx.init(None))[0]
        [tensor([1.0000, 2.0000, 2.8000,    nan])]
        >>> ptx.clamp(min=torch.tensor(-0.5)).update([torch.tensor([-1.0, 1.0])], ptx.EmptyState())[0]
        [tensor([-0.5000,  1.0000])]
    """
    low = _validate.check_optional_setting("clamp", "min", min)
    high = _validate.check_optional_setting("clamp", "max", max)
    if low is None and high is None:
        raise ValueError("clamp: at least one of min and max must be given, got min=None, max=None")
    tensors = isinstance(low, torch.Tensor) or isinstance(high, torch.Tensor)
    if low is not None and high is not None and not tensors and low > high:
        raise ValueError(f"clamp: min must satisfy min <= max, got min={low!r}, max={high!r}")

    def leaf(u: torch.Tensor) -> torch.Tensor:
        lo, hi = low, high
        if tensors and lo is not None and hi is not None:  # (an empty range: NaN, without a host check)
            lo, hi = _validate.nan_where_empty(lo, hi)
        return lift.map_data("clamp", CLAMP, None, u, low=per_element("min", lo), high=per_element("max", hi))

    return stateless("clamp", leaf)


@rebuildable
def sign() -> GradientTransformation:
    """Replace every update by its sign: ``u -> sign(u)`` (0 stays 0).

    Scope: per element. This is also the L-infinity LMO (:func:`lmo_linf`). A
    NaN or infinite element maps to NaN, never to a finite step.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.sign()
        >>> tx.update([torch.tensor([0.3, 0.0, -2.0, float("nan")])], tx.init(None))[0]
        [tensor([ 1.,  0., -1., nan])]
    """
    return stateless("sign", lambda u: lift.map_data("sign", SIGN, None, u))
