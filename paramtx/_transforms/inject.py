"""``inject_hyperparams``: hyperparameters held in the state as tensors, schedules evaluated per step.

A transform's closures capture its hyperparameters when it is built. To change
a learning rate between steps without rebuilding, and without a compiled step
recompiling, the hyperparameters must be *inputs*: :func:`inject_hyperparams`
keeps them in the state as 0-d tensors and rebuilds the inner transform from
them at every step (building is cheap: checks and closures, no tensor work).
A schedule is evaluated at the state's step count and its value kept there too.

Factories declare which of their arguments are hyperparameters with
:func:`schedulable`; given a schedule for one of them, such a factory routes
itself through :func:`inject_hyperparams`, so ``sgd(lr=schedule)`` just works.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from typing import Any, Callable, Iterable, NamedTuple, Optional, Union

import torch

from paramtx._core import tree as _tree
from paramtx._core import validate as _validate
from paramtx._core.base import GradientTransformation, Params, Updates, _Built, rebuildable

Hyperparameter = Union[float, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]
"""A number, a 0-d floating-point tensor, or a schedule (a function of the step count)."""

_DECLARED = "_paramtx_hyperparameters"  # the attribute a schedulable factory carries


class InjectHyperparamsState(NamedTuple):
    """The state of an :func:`inject_hyperparams` transform.

    Attributes:
        count: the number of updates so far (a 0-d int64 tensor); schedules are
            evaluated at it.
        hyperparams: a dict of 0-d tensors, the hyperparameters of the last
            step (of the first step, after ``init``). Replace a number's entry
            with another 0-d tensor between steps to change it
            (``state._replace(hyperparams={**state.hyperparams, "lr": t})``; of
            the same dtype and device, a compiled step does not recompile). A
            schedule's entry is recomputed at every step.
        inner_state: the inner transform's state.

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.inject_hyperparams(ptx.sgd)(lr=0.1).init(torch.zeros(2))
        InjectHyperparamsState(count=tensor(0), hyperparams={'lr': tensor(0.1000)}, inner_state=EmptyState())
    """

    count: Any
    hyperparams: Any
    inner_state: Any


def check_hyperparameter(
    api: str, name: str, value: object, bounds: _validate.Bounds = _validate.UNBOUNDED
) -> Union[float, torch.Tensor]:
    """A real number in ``bounds`` (as a float), or a 0-d floating-point tensor.

    A tensor's value is not read (that would be a host sync at every step of an
    injected transform, and is impossible under ``torch.func`` transforms): as
    for every tensor setting, where it is out of ``bounds`` (or NaN, or
    infinite) it becomes NaN, so the step it drives is NaN rather than wrong.
    """
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or not value.is_floating_point():
            raise TypeError(
                f"{api}: {name} must be a real number or a 0-d floating-point tensor, "
                f"got a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
            )
        return _validate.nan_where_invalid(value, bounds)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{api}: {name} must be a real number, a 0-d floating-point tensor or a schedule, "
            f"got {value!r} (type {type(value).__name__})"
        )
    return bounds.check(api, name, value)


def is_zero(value: Union[float, torch.Tensor]) -> bool:
    """Whether a hyperparameter is the number 0 (a tensor never is: its value is not read)."""
    return not isinstance(value, torch.Tensor) and value == 0


def times(x: torch.Tensor, factor: Union[float, torch.Tensor]) -> torch.Tensor:
    """``factor * x`` in ``x``'s dtype (a 0-d tensor factor would promote a 0-d ``x``)."""
    return (x * factor).to(x.dtype)


def plus_scaled(x: torch.Tensor, y: torch.Tensor, factor: Union[float, torch.Tensor]) -> torch.Tensor:
    """``x + factor * y`` in ``x``'s dtype: one fused kernel for a number, as torch.optim computes it."""
    if isinstance(factor, torch.Tensor):
        return (x + y * factor).to(x.dtype)
    return torch.add(x, y, alpha=factor)


class _Declared(NamedTuple):
    names: frozenset
    raw: Callable[..., GradientTransformation]  # the factory itself, undecorated: cheap to call every step


def schedulable(*names: str) -> Callable[[Callable[..., GradientTransformation]], Callable[..., GradientTransformation]]:
    """Decorate a (``rebuildable``) factory whose arguments ``names`` may be schedules.

    Given a schedule for one of them, the factory returns
    ``inject_hyperparams(factory)(...)``; otherwise it builds as before. Its
    signature (what ``inspect`` and config tools read) and its pickling are
    those of the factory.
    """

    def decorate(factory: Callable[..., GradientTransformation]) -> Callable[..., GradientTransformation]:
        signature = inspect.signature(factory)

        @functools.wraps(factory)
        def route(*args: Any, **kwargs: Any) -> GradientTransformation:
            try:
                given = _flat_arguments(signature, signature.bind(*args, **kwargs))
            except TypeError:
                return factory(*args, **kwargs)  # the factory's own error
            if any(callable(given[name]) for name in names if name in given):
                return inject_hyperparams(public)(*args, **kwargs)
            return factory(*args, **kwargs)

        public = rebuildable(route)
        setattr(public, _DECLARED, _Declared(frozenset(names), inspect.unwrap(factory)))
        return public

    return decorate


def _flat_arguments(signature: inspect.Signature, bound: inspect.BoundArguments) -> dict[str, Any]:
    """The arguments given, by name; those of a ``**options`` parameter among them."""
    flat: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            flat.update(value)
        else:
            flat[name] = value
    return flat


def _call_plan(signature: inspect.Signature, names: Iterable[str]) -> Callable[..., Any]:
    """A function calling a factory with arguments given by name (the inverse of
    :func:`_flat_arguments`), planned once: each step's call is then plain lookups."""
    names = set(names)
    plan: list[tuple[str, str]] = []  # (name, "arg" | "args" | "kw")
    positional = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values())
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            plan.append((name, "args"))
            positional = False
        elif parameter.kind is not inspect.Parameter.VAR_KEYWORD and name in names:
            positional_only = parameter.kind is inspect.Parameter.POSITIONAL_ONLY
            plan.append((name, "arg" if positional or positional_only else "kw"))
    plan.extend((name, "kw") for name in sorted(names - set(signature.parameters)))

    def call(factory: Callable[..., GradientTransformation], flat: dict[str, Any]) -> GradientTransformation:
        args: list = []
        kwargs: dict[str, Any] = {}
        for name, how in plan:
            if how == "arg":
                args.append(flat[name])
            elif how == "args":
                args.extend(flat.get(name, ()))
            else:
                kwargs[name] = flat[name]
        return factory(*args, **kwargs)

    return call


def _is_number(value: object) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)) or (
        isinstance(value, torch.Tensor) and value.ndim == 0
    )


def _hyperparam_dtype(params: Params) -> torch.dtype:
    # float32 at least (an eps of 1e-8 is 0 in float16), float64 where the params are
    leaves = _tree.flatten(params)[0]
    wide = any(isinstance(leaf, torch.Tensor) and leaf.dtype == torch.float64 for leaf in leaves)
    return torch.float64 if wide else torch.float32


class _Injected:
    """The factory ``inject_hyperparams`` returns (a class, so that it pickles)."""

    def __init__(self, factory: Callable[..., GradientTransformation], static_args: frozenset, dtype) -> None:
        self.factory, self.static_args, self.dtype = factory, static_args, dtype
        self.__name__ = f"inject_hyperparams({getattr(factory, '__name__', repr(factory))})"
        self.__signature__ = inspect.signature(factory)

    def __reduce__(self) -> tuple:
        return (_Injected, (self.factory, self.static_args, self.dtype))

    def __repr__(self) -> str:
        return self.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> GradientTransformation:
        # (what it builds pickles and prints as this call)
        return _Built(self._build(*args, **kwargs), (self, args, kwargs))

    def _build(self, *args: Any, **kwargs: Any) -> GradientTransformation:
        api, signature = self.__name__, self.__signature__
        try:
            flat = _flat_arguments(signature, signature.bind(*args, **kwargs))
        except TypeError as error:
            raise TypeError(f"{api}: {error}") from None
        declared: Optional[_Declared] = getattr(self.factory, _DECLARED, None)
        raw = self.factory if declared is None else declared.raw

        def injectable(name: str) -> bool:
            return name not in self.static_args and (declared is None or name in declared.names)

        schedules = {k: v for k, v in flat.items() if injectable(k) and callable(v)}
        numbers_ = {k: v for k, v in flat.items() if injectable(k) and not callable(v) and _is_number(v)}
        static = {k: v for k, v in flat.items() if k not in schedules and k not in numbers_}
        call = _call_plan(signature, flat)
        # Check every argument now, with each schedule's first value.
        call(raw, {**flat, **{k: _first_value(api, k, s) for k, s in schedules.items()}})
        dtype = self.dtype

        def values(count: torch.Tensor, hyperparams: dict) -> dict:
            out = dict(hyperparams)
            for name, schedule in schedules.items():
                out[name] = torch.as_tensor(schedule(count)).to(hyperparams[name].dtype)
            return out

        def init_fn(params: Params) -> InjectHyperparamsState:
            device = _tree.first_device(params)
            kind = dtype or _hyperparam_dtype(params)
            count = torch.zeros((), dtype=torch.int64, device=device)
            start = {k: torch.as_tensor(v, dtype=kind, device=device) for k, v in numbers_.items()}
            start.update((k, torch.zeros((), dtype=kind, device=device)) for k in schedules)
            hyperparams = values(count, start)
            inner = call(raw, {**static, **hyperparams})
            return InjectHyperparamsState(count, hyperparams, inner.init(params))

        def update_fn(updates: Updates, state: InjectHyperparamsState, params: Optional[Params] = None):
            _validate.check_state(api, state, InjectHyperparamsState)
            if not isinstance(state.hyperparams, dict) or set(state.hyperparams) != set(schedules) | set(numbers_):
                raise ValueError(
                    f"{api}: state.hyperparams must be a dict of the hyperparameters "
                    f"{sorted(set(schedules) | set(numbers_))}, got {state.hyperparams!r:.200}"
                )
            for name, value in state.hyperparams.items():
                if not (isinstance(value, torch.Tensor) and value.ndim == 0 and value.is_floating_point()):
                    raise TypeError(f"{api}: state.hyperparams[{name!r}] must be a 0-d floating-point tensor, got {value!r}")
            hyperparams = values(state.count, state.hyperparams)
            inner = call(raw, {**static, **hyperparams})
            updates, inner_state = inner.update(updates, state.inner_state, params)
            return updates, InjectHyperparamsState(state.count + 1, hyperparams, inner_state)

        return GradientTransformation(init_fn, update_fn)


def _first_value(api: str, name: str, schedule: Callable) -> float:
    """A schedule's value at step 0, as a float (at build time: the checks need a number)."""
    value = schedule(torch.zeros((), dtype=torch.int64))
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not (value.is_complex() or value.dtype == torch.bool):
        return float(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{api}: the schedule for {name} must return a 0-d real tensor or a number, got {value!r:.200}")


def inject_hyperparams(
    factory: Callable[..., GradientTransformation],
    *,
    static_args: Iterable[str] = (),
    hyperparam_dtype: Optional[torch.dtype] = None,
) -> Callable[..., GradientTransformation]:
    """Wrap a transform factory so that its hyperparameters live in the state, as tensors.

    ``inject_hyperparams(factory)(*args, **kwargs)`` builds a transform that
    behaves as ``factory(*args, **kwargs)``, except that each hyperparameter
    given (a number, a 0-d tensor or a schedule) is held in the state's
    ``hyperparams`` dict as a 0-d tensor, and the inner transform is rebuilt
    from those tensors at every step. So the caller may change a
    hyperparameter between steps (replace its tensor), a schedule is evaluated
    at the state's ``count`` at every step, and a compiled step reads them as
    inputs: it compiles once however they change.

    The hyperparameters are the arguments given explicitly (defaults stay as
    they are, e.g. ``weight_decay=0`` keeps ``sgd`` from needing params) that
    the factory declares as such (paramtx's step sizes, ``epsilon``, ``q``,
    weight decays, ``eps``; ``momentum`` or ``param_ndim`` decide the state's
    shape and are not) or, for a factory that declares none, every number,
    0-d tensor and callable given, less ``static_args``.

    Scope: that of the inner transform. Numbers become 0-d tensors of
    ``hyperparam_dtype`` (default: float64 if a parameter is float64, else
    float32, also for half-precision params: an ``eps`` of 1e-8 is 0 in float16).
    Numbers, and each schedule's value at step 0, are range-checked when the
    transform is built; a tensor's value is not read (that would be a host
    sync at every step): where it is out of range, the step is NaN.

    Args:
        factory: a function returning a :class:`GradientTransformation`.
        static_args: names of numeric arguments to keep as they are.
        hyperparam_dtype: the dtype of the hyperparameter tensors.

    Returns:
        A factory with ``factory``'s signature.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.inject_hyperparams(ptx.sgd)(lr=ptx.linear_schedule(0.3, 0.1, transition_steps=2))
        >>> p = torch.tensor([1.0])
        >>> state = tx.init(p)
        >>> for _ in range(3):
        ...     u, state = tx.update(torch.tensor([1.0]), state, p)
        ...     print(u, state.hyperparams["lr"])
        tensor([-0.3000]) tensor(0.3000)
        tensor([-0.2000]) tensor(0.2000)
        tensor([-0.1000]) tensor(0.1000)

        A number becomes a tensor in the state, which the caller may replace:

        >>> tx = ptx.inject_hyperparams(ptx.adam)(lr=0.1)
        >>> state = tx.init(p)
        >>> state.hyperparams
        {'lr': tensor(0.1000)}
        >>> state = state._replace(hyperparams={"lr": torch.tensor(0.5)})
        >>> tx.update(torch.tensor([2.0]), state, p)[0]     # Adam's first step is -lr * sign(g)
        tensor([-0.5000])
    """
    if not callable(factory):
        raise TypeError(f"inject_hyperparams: factory must be callable, got {factory!r}")
    if isinstance(static_args, str):
        static_args = (static_args,)
    static = frozenset(static_args)
    for name in static:
        if not isinstance(name, str):
            raise TypeError(f"inject_hyperparams: static_args must be names (str), got {name!r}")
    if hyperparam_dtype is not None and not (
        isinstance(hyperparam_dtype, torch.dtype) and hyperparam_dtype.is_floating_point
    ):
        raise TypeError(f"inject_hyperparams: hyperparam_dtype must be a floating-point torch.dtype or None, got {hyperparam_dtype!r}")
    return _Injected(factory, static, hyperparam_dtype)
