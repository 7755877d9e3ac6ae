"""The core types: ``GradientTransformation``, ``chain``, ``identity``, ``apply_updates``."""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional, Protocol, TypeVar, cast

import torch

from paramtx._core import tree as _tree

Params = Any
"""A pytree of tensors (dict, list, tuple, nested); ``None`` leaves allowed."""
Updates = Any
"""A pytree of tensors with the structure of the params; ``None`` = no update."""
State = Any
"""A transform's state: a NamedTuple (or a tuple of them, for a chain)."""


class InitFn(Protocol):
    def __call__(self, params: Params) -> State: ...


class UpdateFn(Protocol):
    def __call__(
        self, updates: Updates, state: State, params: Optional[Params] = None
    ) -> tuple[Updates, State]: ...


class GradientTransformation(NamedTuple):
    """A pure gradient transformation: a pair of functions ``(init, update)``.

    ``init(params) -> state`` builds the state; ``update(updates, state,
    params=None) -> (new_updates, new_state)`` maps updates (gradients, or the
    output of the previous transform in a chain) to new updates. Neither mutates
    its inputs.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.GradientTransformation(
        ...     init=lambda params: ptx.EmptyState(),
        ...     update=lambda u, s, p=None: ({k: 2 * v for k, v in u.items()}, s),
        ... )
        >>> updates, state = tx.update({"w": torch.tensor([1.0, -2.0])}, tx.init(None))
        >>> updates
        {'w': tensor([ 2., -4.])}
    """

    init: InitFn
    update: UpdateFn


class EmptyState(NamedTuple):
    """The state of a stateless transform.

    Example:
        >>> import paramtx as ptx
        >>> ptx.sign().init({"w": None})
        EmptyState()
    """


class _Built(GradientTransformation):
    """A transform that remembers the factory call that built it.

    Its functions are closures, which cannot be pickled; the call can, and
    repeats its checks when it is replayed. So a built transform pickles (and
    deep-copies) as that call, and prints as it.
    """

    _recipe: tuple

    def __new__(cls, transform: GradientTransformation, recipe: tuple) -> "_Built":
        built = super().__new__(cls, transform.init, transform.update)
        built._recipe = recipe
        return built

    def __reduce__(self) -> tuple:
        return (_rebuild, self._recipe)

    def __repr__(self) -> str:
        factory, args, kwargs = self._recipe
        shown = [_shown(a) for a in args] + [f"{k}={_shown(v)}" for k, v in kwargs.items()]
        return f"{factory.__name__}({', '.join(shown)})"


def _shown(value: Any) -> str:
    # a function by its name (projected's projection), anything else as it prints
    return value.__name__ if callable(value) and hasattr(value, "__name__") else repr(value)


def _rebuild(factory: Callable[..., GradientTransformation], args: tuple, kwargs: dict) -> GradientTransformation:
    return factory(*args, **kwargs)


F = TypeVar("F", bound=Callable[..., GradientTransformation])


def rebuildable(factory: F) -> F:
    """Decorate a public transform factory: what it builds pickles as the call that built it."""

    @functools.wraps(factory)
    def build(*args: Any, **kwargs: Any) -> GradientTransformation:
        return _Built(factory(*args, **kwargs), (build, args, kwargs))

    return cast(F, build)


def stateless(api: str, leaf_fn: Callable[[torch.Tensor], torch.Tensor]) -> GradientTransformation:
    """A transform applying ``leaf_fn`` to every update leaf, with no state."""

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates: Updates, state: State, params: Optional[Params] = None):
        del params
        return _tree.map_updates(api, leaf_fn, updates), state

    return GradientTransformation(init_fn, update_fn)


@rebuildable
def identity() -> GradientTransformation:
    """The transform that returns its updates unchanged.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.identity()
        >>> tx.update([torch.tensor(3.0)], tx.init(None))
        ([tensor(3.)], EmptyState())
    """

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates: Updates, state: State, params: Optional[Params] = None):
        del params
        return updates, state

    return GradientTransformation(init_fn, update_fn)


@rebuildable
def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Compose transforms left to right: ``chain(a, b)`` applies ``a``, then ``b``.

    The state is a tuple holding one state per transform, in order. ``update``
    raises ``ValueError`` if it is given a state of another shape.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.chain(ptx.normalize(p=2, param_ndim=None), ptx.scale(-0.5))
        >>> state = tx.init(None)
        >>> state
        (EmptyState(), EmptyState())
        >>> updates, state = tx.update({"w": torch.tensor([3.0, 4.0])}, state)
        >>> updates["w"]
        tensor([-0.3000, -0.4000])
    """
    for position, transform in enumerate(transforms):
        if not isinstance(transform, GradientTransformation):
            raise TypeError(
                f"chain: argument {position} must be a GradientTransformation, "
                f"got {transform!r} (type {type(transform).__name__})"
            )
    count = len(transforms)

    def init_fn(params: Params) -> tuple:
        return tuple(transform.init(params) for transform in transforms)

    def update_fn(updates: Updates, state: tuple, params: Optional[Params] = None):
        if type(state) is not tuple or len(state) != count:
            raise ValueError(
                f"chain: state must be the tuple of {count} states built by this "
                f"chain's init, got {type(state).__name__} {state!r:.200}"
            )
        new_states = []
        for transform, inner_state in zip(transforms, state):
            updates, inner_state = transform.update(updates, inner_state, params)
            new_states.append(inner_state)
        return updates, tuple(new_states)

    return GradientTransformation(init_fn, update_fn)


def apply_updates(params: Params, updates: Updates) -> Params:
    """Return ``params + updates`` leaf by leaf, keeping each parameter's dtype.

    A ``None`` update leaves its parameter as it is. Nothing is modified in
    place.

    Example:
        >>> import torch, paramtx as ptx
        >>> params = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(0.5)}
        >>> ptx.apply_updates(params, {"w": torch.tensor([0.5, -0.5]), "b": None})
        {'w': tensor([1.5000, 1.5000]), 'b': tensor(0.5000)}
    """
    leaves, spec = _tree.checked_leaves("apply_updates", updates)
    param_leaves = _tree.leaves_like("apply_updates", spec, params, "params")
    for index, (param, update) in enumerate(zip(param_leaves, leaves)):
        if update is None:
            continue
        if param is None:
            raise ValueError(
                f"apply_updates: the update at {_tree.path_of(updates, index)} has no parameter "
                f"(params has None there)"
            )
        if not (isinstance(param, torch.Tensor) and param.is_floating_point()):
            # ``.to(param.dtype)`` would silently truncate an integer parameter: raise, naming the leaf
            _tree.check_leaf("apply_updates", "params", param, _tree.path_of(updates, index))
        if update.shape != param.shape:
            # ``param + update`` would broadcast a parameter into another shape
            raise ValueError(
                f"apply_updates: the update at {_tree.path_of(updates, index)} has shape "
                f"{tuple(update.shape)}, its parameter {tuple(param.shape)}; they must be equal"
            )
    new = [
        param if update is None else (param + update).to(param.dtype)
        for param, update in zip(param_leaves, leaves)
    ]
    return _tree.unflatten(spec, new)
