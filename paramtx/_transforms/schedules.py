"""Schedules: hyperparameters as functions of the step count.

A schedule maps the step count (a 0-d int64 tensor, or an int) to a 0-d float64
tensor on the count's device. It is written in tensor ops only, with no branch
on the count's value, so a compiled step that evaluates it compiles once
however the count moves. Give one to any step size, ``epsilon``, ``q`` or weight
decay (or wrap a factory with :func:`inject_hyperparams`): it is evaluated at the
state's count at every step.

A schedule pickles and prints as the call that built it.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Sequence, TypeVar, Union, cast

import torch

from paramtx._core import validate as _validate

Count = Union[int, torch.Tensor]
"""A step count: a 0-d integer tensor (as transforms' states hold it) or an int."""

Schedule = Callable[[Count], torch.Tensor]
"""A function of the step count that returns a 0-d tensor."""


class _Schedule:
    """A schedule that remembers the call that built it (for pickling and ``repr``)."""

    __slots__ = ("_fn", "_recipe")

    def __init__(self, fn: Schedule, recipe: tuple) -> None:
        self._fn = fn
        self._recipe = recipe

    def __call__(self, count: Count) -> torch.Tensor:
        return self._fn(_as_count(count))

    def __reduce__(self) -> tuple:
        return (_rebuild, self._recipe)

    def __repr__(self) -> str:
        factory, args, kwargs = self._recipe
        shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
        return f"{factory.__name__}({', '.join(shown)})"


def _rebuild(factory: Callable[..., Schedule], args: tuple, kwargs: dict) -> Schedule:
    return factory(*args, **kwargs)


F = TypeVar("F", bound=Callable[..., Schedule])


def _rebuildable_schedule(factory: F) -> F:
    @functools.wraps(factory)
    def build(*args: Any, **kwargs: Any) -> Schedule:
        return _Schedule(factory(*args, **kwargs), (build, args, kwargs))

    return cast(F, build)


def _as_count(count: Count) -> torch.Tensor:
    if isinstance(count, torch.Tensor):
        return count
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"schedule: the count must be an int or an integer tensor, got {count!r}")
    return torch.tensor(count, dtype=torch.int64)


def _steps(count: Count) -> torch.Tensor:
    """The count as float64, the dtype every schedule computes in (torch.optim's Python floats)."""
    return _as_count(count).to(torch.float64)


def _full(count: Count, value: float) -> torch.Tensor:
    return torch.full((), value, dtype=torch.float64, device=_as_count(count).device)


def _value(value: Any, count: torch.Tensor) -> torch.Tensor:
    """What a (possibly user-written) schedule returned, as a float64 tensor on the count's device."""
    return torch.as_tensor(value, dtype=torch.float64, device=count.device)


@_rebuildable_schedule
def constant_schedule(value: float) -> Schedule:
    """The schedule that is ``value`` at every step.

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.constant_schedule(0.1)(torch.tensor(7))
        tensor(0.1000, dtype=torch.float64)
    """
    value = _validate.check_real("constant_schedule", "value", value)
    return lambda count: _full(count, value)


@_rebuildable_schedule
def linear_schedule(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    r"""Go linearly from ``init_value`` to ``end_value`` over ``transition_steps`` steps.

    :math:`v(t) = e + (i - e)(1 - \tau / T)` with
    :math:`\tau = \mathrm{clip}(t - t_0, 0, T)`: ``init_value`` until
    ``transition_begin`` (:math:`t_0`), ``end_value`` from ``transition_begin +
    transition_steps`` on. With ``transition_steps <= 0`` it is ``init_value``
    throughout (as in optax).

    Example:
        >>> import torch, paramtx as ptx
        >>> schedule = ptx.linear_schedule(1.0, 0.0, transition_steps=4, transition_begin=2)
        >>> torch.stack([schedule(t) for t in range(8)])
        tensor([1.0000, 1.0000, 1.0000, 0.7500, 0.5000, 0.2500, 0.0000, 0.0000],
               dtype=torch.float64)
    """
    api = "linear_schedule"
    init_value = _validate.check_real(api, "init_value", init_value)
    end_value = _validate.check_real(api, "end_value", end_value)
    transition_steps = _validate.check_int(api, "transition_steps", transition_steps)
    transition_begin = _validate.check_int(api, "transition_begin", transition_begin, low=0)
    if transition_steps <= 0:
        return lambda count: _full(count, init_value)

    def schedule(count: Count) -> torch.Tensor:
        elapsed = (_steps(count) - transition_begin).clamp(0, transition_steps)
        return (init_value - end_value) * (1 - elapsed / transition_steps) + end_value

    return schedule


@_rebuildable_schedule
def cosine_decay_schedule(init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0) -> Schedule:
    r"""Decay ``init_value`` along half a cosine over ``decay_steps`` steps, to ``alpha * init_value``.

    :math:`v(t) = i \left((1 - \alpha) \left(\tfrac12 (1 + \cos(\pi \min(t, T) / T))\right)^p + \alpha\right)`
    (``T = decay_steps``, ``p = exponent``); it stays at ``alpha * init_value``
    after ``T`` steps. With ``exponent=1`` and ``alpha = eta_min / init_value``
    it is ``torch.optim.lr_scheduler.CosineAnnealingLR`` over its first half-period.

    Raises:
        ValueError: if ``decay_steps <= 0``.

    Example:
        >>> import torch, paramtx as ptx
        >>> schedule = ptx.cosine_decay_schedule(1.0, decay_steps=4, alpha=0.1)
        >>> torch.stack([schedule(t) for t in range(6)])
        tensor([1.0000, 0.8682, 0.5500, 0.2318, 0.1000, 0.1000], dtype=torch.float64)
    """
    api = "cosine_decay_schedule"
    init_value = _validate.check_real(api, "init_value", init_value)
    decay_steps = _validate.check_int(api, "decay_steps", decay_steps, low=1)
    alpha = _validate.check_real(api, "alpha", alpha)
    exponent = _validate.check_real(api, "exponent", exponent)

    def schedule(count: Count) -> torch.Tensor:
        progress = _steps(count).clamp(max=decay_steps) / decay_steps
        cosine = 0.5 * (1 + torch.cos(math.pi * progress))
        return init_value * ((1 - alpha) * cosine**exponent + alpha)

    return schedule


@_rebuildable_schedule
def warmup_cosine_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """A linear warmup from ``init_value`` to ``peak_value``, then a cosine decay to ``end_value``.

    The warmup takes ``warmup_steps`` steps (:func:`linear_schedule`); the cosine
    decay (:func:`cosine_decay_schedule`) the remaining ``decay_steps -
    warmup_steps``: ``decay_steps`` is the length of the whole schedule, as in
    optax. After it the value stays at ``end_value``.

    Raises:
        ValueError: if ``decay_steps <= warmup_steps`` or ``warmup_steps < 0``.

    Example:
        >>> import torch, paramtx as ptx
        >>> schedule = ptx.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=2, decay_steps=6, end_value=0.2)
        >>> torch.stack([schedule(t) for t in range(8)])
        tensor([0.0000, 0.5000, 1.0000, 0.8828, 0.6000, 0.3172, 0.2000, 0.2000],
               dtype=torch.float64)
    """
    api = "warmup_cosine_decay_schedule"
    init_value = _validate.check_real(api, "init_value", init_value)
    peak_value = _validate.check_real(api, "peak_value", peak_value)
    warmup_steps = _validate.check_int(api, "warmup_steps", warmup_steps, low=0)
    decay_steps = _validate.check_int(api, "decay_steps", decay_steps)
    end_value = _validate.check_real(api, "end_value", end_value)
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"{api}: decay_steps (the whole schedule's length) must satisfy decay_steps > warmup_steps, "
            f"got decay_steps={decay_steps!r}, warmup_steps={warmup_steps!r}"
        )
    alpha = 0.0 if peak_value == 0 else end_value / peak_value
    return join_schedules(
        [
            linear_schedule(init_value, peak_value, warmup_steps),
            cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha=alpha, exponent=exponent),
        ],
        [warmup_steps],
    )


@_rebuildable_schedule
def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Optional[float] = None,
) -> Schedule:
    r"""Multiply ``init_value`` by ``decay_rate`` every ``transition_steps`` steps.

    :math:`v(t) = i \cdot r^{(t - t_0) / T}` for :math:`t > t_0` (the exponent
    floored with ``staircase``), ``init_value`` until ``transition_begin``
    (:math:`t_0`), and bounded by ``end_value`` if given (below it for ``r < 1``,
    above it for ``r > 1``). With ``transition_steps <= 0`` it is ``init_value``
    throughout (as in optax). With ``transition_steps=1`` it is
    ``torch.optim.lr_scheduler.ExponentialLR(gamma=decay_rate)``.

    Raises:
        ValueError: if ``decay_rate <= 0``.

    Example:
        >>> import torch, paramtx as ptx
        >>> schedule = ptx.exponential_decay(1.0, transition_steps=2, decay_rate=0.5, staircase=True)
        >>> torch.stack([schedule(t) for t in range(6)])
        tensor([1.0000, 1.0000, 0.5000, 0.5000, 0.2500, 0.2500], dtype=torch.float64)
    """
    api = "exponential_decay"
    init_value = _validate.check_real(api, "init_value", init_value)
    transition_steps = _validate.check_int(api, "transition_steps", transition_steps)
    decay_rate = _validate.check_real(api, "decay_rate", decay_rate, low=0.0, low_inclusive=False)
    transition_begin = _validate.check_int(api, "transition_begin", transition_begin, low=0)
    staircase = _validate.check_bool(api, "staircase", staircase)
    end_value = _validate.check_optional_real(api, "end_value", end_value)
    if transition_steps <= 0:
        return lambda count: _full(count, init_value)

    def schedule(count: Count) -> torch.Tensor:
        elapsed = _steps(count) - transition_begin
        exponent = elapsed / transition_steps
        if staircase:
            exponent = torch.floor(exponent)
        value = init_value * torch.pow(decay_rate, exponent.clamp(min=0))
        if end_value is None:
            return value
        return value.clamp(min=end_value) if decay_rate < 1 else value.clamp(max=end_value)

    return schedule


@_rebuildable_schedule
def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run ``schedules`` one after the other, switching at the step counts in ``boundaries``.

    From ``boundaries[i - 1]`` on, the value is ``schedules[i](count -
    boundaries[i - 1])``: each schedule counts its steps from its own start.

    Raises:
        ValueError: unless there is one boundary fewer than schedules, and the
            boundaries are non-negative and non-decreasing.

    Example:
        >>> import torch, paramtx as ptx
        >>> schedule = ptx.join_schedules(
        ...     [ptx.constant_schedule(1.0), ptx.linear_schedule(0.5, 0.0, transition_steps=2)], boundaries=[3]
        ... )
        >>> torch.stack([schedule(t) for t in range(7)])
        tensor([1.0000, 1.0000, 1.0000, 0.5000, 0.2500, 0.0000, 0.0000],
               dtype=torch.float64)
    """
    api = "join_schedules"
    if isinstance(schedules, (str, bytes)) or not isinstance(schedules, Sequence) or len(schedules) == 0:
        raise TypeError(f"{api}: schedules must be a non-empty sequence of schedules, got {schedules!r}")
    for index, item in enumerate(schedules):
        if not callable(item):
            raise TypeError(f"{api}: schedules[{index}] must be callable, got {item!r}")
    if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Sequence):
        raise TypeError(f"{api}: boundaries must be a sequence of ints, got {boundaries!r}")
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"{api}: boundaries must hold one int fewer than schedules ({len(schedules) - 1}), got {boundaries!r}"
        )
    bounds = [_validate.check_int(api, f"boundaries[{i}]", b, low=0) for i, b in enumerate(boundaries)]
    if any(later < earlier for earlier, later in zip(bounds, bounds[1:])):
        raise ValueError(f"{api}: boundaries must be non-decreasing, got {boundaries!r}")
    first, rest = schedules[0], list(zip(bounds, schedules[1:]))

    def schedule(count: Count) -> torch.Tensor:
        count = _as_count(count)
        value = _value(first(count), count)
        for boundary, later in rest:
            value = torch.where(count < boundary, value, _value(later(count - boundary), count))
        return value

    return schedule
