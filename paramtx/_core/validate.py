"""Argument checks shared by every factory.

Each check raises ``TypeError`` for a value of the wrong kind and ``ValueError``
for a value out of range. Messages start with the API's name and quote the value
they got, e.g. ``"top_q: q must satisfy 0 <= q <= 1, got 1.5"``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Optional, Union

import torch


def check_real(
    api: str,
    name: str,
    value: object,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    finite: bool = True,
) -> float:
    """Return ``value`` as a float after checking its type and its range.

    Booleans are not numbers here; NaN is never accepted, and infinities only
    where ``finite=False`` says they mean something (the order of a norm).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{api}: {name} must be a real number, got {value!r} "
            f"(type {type(value).__name__})"
        )
    value = float(value)
    if torch.compiler.is_compiling():
        # A factory rebuilt inside a compiled step (injected hyperparameters) was checked
        # when it was first built; dynamo may trace a number here as a symbol, whose
        # value cannot be read (math.isnan of it breaks the graph).
        return value
    if math.isnan(value):
        raise ValueError(f"{api}: {name} must not be NaN, got {value!r}")
    if finite and math.isinf(value):
        raise ValueError(f"{api}: {name} must be finite, got {value!r}")
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        raise ValueError(f"{api}: {name} must satisfy {_range(name, low, high, low_inclusive, high_inclusive)}, got {value!r}")
    return value


def _range(name, low, high, low_inclusive, high_inclusive) -> str:
    parts = []
    if low is not None:
        parts.append(f"{low:g} {'<=' if low_inclusive else '<'} ")
    parts.append(name)
    if high is not None:
        parts.append(f" {'<=' if high_inclusive else '<'} {high:g}")
    return "".join(parts)


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The range a real setting must lie in (see :func:`check_real`)."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def check(self, api: str, name: str, value: object) -> float:
        """``value``, a real number in range, as a float (else ``TypeError``/``ValueError``)."""
        return check_real(
            api, name, value, low=self.low, high=self.high,
            low_inclusive=self.low_inclusive, high_inclusive=self.high_inclusive,
        )

    def valid(self, value: torch.Tensor) -> torch.Tensor:
        """Elementwise, whether a tensor's values are finite and in range (a tensor op: no host sync)."""
        ok = torch.isfinite(value)
        if self.low is not None:
            ok = ok & (value >= self.low if self.low_inclusive else value > self.low)
        if self.high is not None:
            ok = ok & (value <= self.high if self.high_inclusive else value < self.high)
        return ok


UNBOUNDED = Bounds()
POSITIVE = Bounds(low=0.0, low_inclusive=False)
NON_NEGATIVE = Bounds(low=0.0)
UNIT_INTERVAL = Bounds(low=0.0, high=1.0)

Setting = Union[float, torch.Tensor]
"""A hyperparameter that may vary per datum: a real number, or a tensor of them."""


def check_setting(api: str, name: str, value: object, bounds: Bounds = UNBOUNDED) -> Setting:
    """A real number in ``bounds`` (returned as a float), or a real tensor (returned as it is).

    Only what costs no host sync is checked here: a tensor's kind (real, dense,
    not bool). Its values cannot be read without a sync, so they are not
    checked: where a value is out of ``bounds`` (or NaN, or infinite), the datum
    it applies to comes out as NaNs (see :func:`nan_where_invalid`). Its shape is
    checked against the data by the lift, which knows their batch shape.
    """
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex() or value.layout != torch.strided:
            raise TypeError(
                f"{api}: {name} must be a real number or a dense real tensor, got a tensor of "
                f"dtype {value.dtype} and layout {value.layout}"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{api}: {name} must be a real number or a real tensor, got {value!r} (type {type(value).__name__})"
        )
    return bounds.check(api, name, value)


def check_optional_setting(api: str, name: str, value: object) -> Optional[Setting]:
    """``None``, a real number or a real tensor (see :func:`check_setting`)."""
    return None if value is None else check_setting(api, name, value)


def nan_where_invalid(value: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    """A floating-point tensor of ``value``'s values, NaN where one is NaN, infinite or
    outside ``bounds``: the policy for tensor settings, whose values cannot be checked
    without a host sync (an invalid setting gives NaN out, as NaN data do)."""
    if not value.is_floating_point():
        value = value.to(torch.float64)  # (an integer setting: exact, as a Python float)
    return torch.where(bounds.valid(value), value, torch.nan)


def nan_where_empty(lower: Setting, upper: Setting) -> tuple[Setting, Setting]:
    """Bounds ``lower <= upper``, at least one a tensor: the tensor one(s) NaN where
    ``lower > upper`` (an empty range, which only a host sync could raise for)."""
    ordered = torch.as_tensor(lower <= upper)
    if isinstance(lower, torch.Tensor):
        return torch.where(ordered, lower, torch.nan), upper
    return lower, torch.where(ordered, torch.as_tensor(upper), torch.nan)


def check_optional_real(api: str, name: str, value: object) -> Optional[float]:
    """``None`` or a real number."""
    return None if value is None else check_real(api, name, value)


def check_bool(api: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{api}: {name} must be a bool, got {value!r} (type {type(value).__name__})")
    return value


def check_int(api: str, name: str, value: object, *, low: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{api}: {name} must be an int, got {value!r} (type {type(value).__name__})")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{api}: {name} must satisfy {name} >= {low}, got {value!r}")
    return value


def check_param_ndim(api: str, value: object) -> Optional[int]:
    """``param_ndim`` is an int or ``None``; its size is checked per tensor."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{api}: param_ndim must be an int or None, got {value!r} "
            f"(type {type(value).__name__})"
        )
    return int(value)


def check_param_ndim_spec(api: str, value: object) -> object:
    """``param_ndim`` for a transform over a pytree: an int or ``None`` (every leaf), a
    callable ``(path, shape) -> int | None`` (asked per leaf), or a pytree of ints and
    ``None``s with the structure of the params, or a prefix of it (checked per leaf
    when the params are seen, see :func:`paramtx._core.tree.leaf_param_ndims`)."""
    if callable(value):
        return value
    if value is None or (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
        return check_param_ndim(api, value)  # (the common case, without a flatten)
    import optree  # (a pytree: its leaves are checked now, its structure against the params later)

    paths, leaves, spec = optree.tree_flatten_with_path(value, none_is_leaf=True)  # type: ignore[arg-type,var-annotated]
    if spec.is_leaf():
        try:
            return check_param_ndim(api, value)
        except TypeError:
            raise TypeError(
                f"{api}: param_ndim must be an int or None (or, per leaf, a pytree of them or a callable "
                f"of (path, shape)), got {value!r} (type {type(value).__name__})"
            ) from None
    for path, leaf in zip(paths, leaves):
        if leaf is not None and (isinstance(leaf, bool) or not isinstance(leaf, numbers.Integral)):
            where = "/".join(map(str, path))
            raise TypeError(
                f"{api}: param_ndim must be an int or None, or per leaf a pytree of them or a callable of "
                f"(path, shape), got {value!r}: at {where} it holds {leaf!r} (type {type(leaf).__name__})"
            )
    return value


def check_state(api: str, state: object, state_type: type) -> None:
    """``state`` is the ``state_type`` built by the transform's ``init`` (not another's)."""
    if not isinstance(state, state_type):
        raise ValueError(
            f"{api}: state must be the {state_type.__name__} built by this transform's init, "
            f"got {type(state).__name__} {state!r:.200}"
        )


def check_p(api: str, value: object) -> float:
    """The order ``p >= 1`` of an Lp norm (``math.inf`` allowed)."""
    p = check_real(api, "p", value, finite=False)
    if not p >= 1:
        raise ValueError(f"{api}: p must satisfy p >= 1 (or be math.inf), got {value!r}")
    return p
