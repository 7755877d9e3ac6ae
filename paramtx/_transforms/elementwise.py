"""Per-element transforms: ``scale``, ``add``, ``clamp``, ``sign``.

Each acts on every element of every update leaf independently, so
``param_ndim`` does not apply.
"""

from __future__ import annotations

from typing import Optional

import torch

from paramtx._core import validate as _validate
from paramtx._core.base import GradientTransformation, rebuildable, stateless
from paramtx._lift import lift
from paramtx._lift.ops import DatumOp, Mapped, Scaled

SCALE = DatumOp("scale", lambda x, *, factor: Scaled(x, factor), elementwise=True, ieee=True)
"""``x * factor``."""

ADD = DatumOp("add", lambda x, *, bias: Mapped(torch.add, (x, bias)), elementwise=True, ieee=True)
"""``x + bias``."""

CLAMP = DatumOp("clamp", lambda x, *, low, high: Mapped(torch.clamp, (x, low, high)), elementwise=True)
"""``x`` clamped into ``[low, high]`` (either bound may be ``None``); NaN for a NaN or inf."""

SIGN = DatumOp("sign", lambda x: Mapped(torch.sign, (x,)), elementwise=True)
"""``sign(x)`` (``0`` stays ``0``); NaN for a NaN or inf."""


@rebuildable
def scale(step_size: float) -> GradientTransformation:
    """Multiply every update by a constant: ``u -> step_size * u``.

    Scope: per element.

    Args:
        step_size: the factor; ``scale(-lr)`` turns a gradient into a descent step.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.scale(-0.1)
        >>> tx.update([torch.tensor([1.0, -2.0])], tx.init(None))[0]
        [tensor([-0.1000,  0.2000])]
    """
    step_size = _validate.check_real("scale", "step_size", step_size)
    return stateless("scale", lambda u: lift.map_data("scale", SCALE, None, u, factor=step_size))


@rebuildable
def add(bias: float) -> GradientTransformation:
    """Add a constant to every update: ``u -> u + bias`` (rai-toolbox's ``grad_bias``).

    Scope: per element.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.add(0.5)
        >>> tx.update([torch.tensor([1.0, -2.0])], tx.init(None))[0]
        [tensor([ 1.5000, -1.5000])]
    """
    bias = _validate.check_real("add", "bias", bias)
    return stateless("add", lambda u: lift.map_data("add", ADD, None, u, bias=bias))


@rebuildable
def clamp(min: Optional[float] = None, max: Optional[float] = None) -> GradientTransformation:
    """Clamp every update into ``[min, max]``; either bound may be ``None``.

    Scope: per element. A NaN or infinite element maps to NaN (see the README's
    numerics policy), never to a bound.

    Raises:
        ValueError: if both bounds are ``None`` or ``min > max``.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.clamp(max=2.8)
        >>> tx.update([torch.tensor([1.0, 2.0, 3.0, float("inf")])], tx.init(None))[0]
        [tensor([1.0000, 2.0000, 2.8000,    nan])]
    """
    low = _validate.check_optional_real("clamp", "min", min)
    high = _validate.check_optional_real("clamp", "max", max)
    if low is None and high is None:
        raise ValueError("clamp: at least one of min and max must be given, got min=None, max=None")
    if low is not None and high is not None and low > high:
        raise ValueError(f"clamp: min must satisfy min <= max, got min={low!r}, max={high!r}")
    return stateless("clamp", lambda u: lift.map_data("clamp", CLAMP, None, u, low=low, high=high))


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
