"""Argument checks shared by every factory.

Each check raises ``TypeError`` for a value of the wrong kind and ``ValueError``
for a value out of range. Messages start with the API's name and quote the value
they got, e.g. ``"top_q: q must satisfy 0 <= q <= 1, got 1.5"``.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional


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
