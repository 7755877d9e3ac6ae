"""Per-subtree transforms: ``masked`` and ``multi_transform``, the functional twin of param groups.

Both hand an inner transform the updates (and params) with every leaf it does
not own replaced by a :class:`MaskedNode`, an empty subtree: the inner
transform does not see those leaves at all and keeps no state for them; then
they put the leaves back together. Masks and labels are read from the tree's
structure, never from tensor values, so both compose with ``torch.func.vmap``
and ``torch.compile`` as their inner transforms do.
"""

from __future__ import annotations

import collections.abc
from typing import Any, Callable, Hashable, Mapping, NamedTuple, Optional, Union

import optree

from paramtx._core import tree as _tree
from paramtx._core import validate as _validate
from paramtx._core.base import GradientTransformation, Params, Updates, rebuildable

Mask = Union[Any, Callable[[Params], Any]]
"""A pytree of bools with the params' structure (or a prefix of it), or a function of the params returning one."""

Labels = Union[Any, Callable[[Params], Any]]
"""A pytree of labels with the params' structure (or a prefix of it), or a function of the params returning one."""


def _broadcast(api: str, what: str, prefix: Any, tree: Any) -> list[Any]:
    """The leaves of ``prefix`` repeated over the leaves of ``tree`` (a function is called with ``tree`` first)."""
    if callable(prefix):
        prefix = prefix(tree)

    def spread(value: Any, subtree: Any) -> Any:
        return optree.tree_map(lambda _: value, subtree, none_is_leaf=True)

    try:
        # (map, then take leaves: it also traces under torch.compile, where flattening a
        # tree of constants does not)
        full = optree.tree_map(spread, prefix, tree, none_is_leaf=True)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{api}: {what} must have the structure of the params (or a prefix of it); "
            f"the params have {optree.tree_structure(tree, none_is_leaf=True)}, {what} is {prefix!r:.200}"
        ) from error
    return optree.tree_leaves(full, none_is_leaf=True)


def check_mask(api: str, mask: Any) -> None:
    """A mask is a function, or a pytree whose leaves are bools (or ``None``, which counts as ``False``)."""
    if callable(mask):
        return
    leaves, _ = _tree.flatten(mask)
    for index, leaf in enumerate(leaves):
        if not (leaf is None or isinstance(leaf, bool)):
            raise TypeError(
                f"{api}: mask must be a pytree of bools or a function of the params, "
                f"got {leaf!r} at {_tree.path_of(mask, index)}"
            )


def mask_leaves(api: str, mask: Mask, tree: Any) -> list[bool]:
    """Per leaf of ``tree``, whether ``mask`` selects it (a function mask is called with ``tree``)."""
    flags = _broadcast(api, "mask", mask, tree)
    for index, flag in enumerate(flags):
        if not (flag is None or isinstance(flag, bool)):
            raise TypeError(f"{api}: mask must hold bools, got {flag!r} at {_tree.path_of(tree, index)}")
    return [flag is True for flag in flags]


class MaskedNode(NamedTuple):
    """What stands for a leaf (or a whole subtree) that ``masked`` or ``multi_transform`` keeps from an inner transform.

    An empty subtree (a NamedTuple with no fields): it holds no leaf, so the
    inner transform's ``init`` and ``update`` skip it, and ``torch.func.vmap``
    carries a state holding it (where ``None`` leaves would stop it).

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.masked(ptx.adam(), {"w": True, "b": False}).init({"w": torch.zeros(1), "b": torch.zeros(1)})
        MaskedState(inner_state=AdamState(count={'w': tensor(0), 'b': MaskedNode()}, mu={'w': tensor([0.]), 'b': MaskedNode()}, nu={'w': tensor([0.]), 'b': MaskedNode()}))
    """


def _restricted(tree: Any, keep: list[bool]) -> Any:
    """``tree`` with every leaf not kept replaced by a :class:`MaskedNode`, and every subtree
    with no leaf kept by a single one (``keep`` is per leaf, in flattening order).

    (Built node by node rather than unflattened from a spec: torch 2.13's compiler
    cannot rebuild a dict none of whose leaves is a tensor, which a subtree of
    placeholders would be.)
    """
    flags = iter(keep)

    def build(node: Any) -> Any:
        if optree.tree_is_leaf(node, none_is_leaf=True):
            return node if next(flags) else MaskedNode()
        children, metadata, _, rebuild = optree.tree_flatten_one_level(node, none_is_leaf=True)
        kept = [build(child) for child in children]
        if all(isinstance(child, MaskedNode) for child in kept):
            return MaskedNode()
        return rebuild(metadata, kept)

    return build(tree)


def _merged(api: str, name: str, into: list[Any], out: Any, keep: list[bool]) -> None:
    """Write the leaves of ``out`` (an inner transform's updates of a :func:`_restricted` tree)
    into the kept places of ``into``."""
    out_leaves = optree.tree_leaves(out, none_is_leaf=True)
    if len(out_leaves) != sum(keep):
        raise ValueError(
            f"{api}: {name} returned {len(out_leaves)} update leaves for the {sum(keep)} it was given"
        )
    new = iter(out_leaves)
    for index, kept in enumerate(keep):
        if kept:
            into[index] = next(new)


class MaskedState(NamedTuple):
    """The state of :func:`masked`: the inner transform's state (without the leaves masked out).

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.masked(ptx.sgd(0.1, momentum=0.9), {"w": True, "b": False})
        >>> tx.init({"w": torch.zeros(2), "b": torch.zeros(2)})
        MaskedState(inner_state=SgdState(momentum_buffer={'w': tensor([0., 0.]), 'b': MaskedNode()}, count={'w': tensor(0), 'b': MaskedNode()}))
    """

    inner_state: Any


def _select(api: str, mask: Mask, params: Optional[Params], updates: Updates) -> list[bool]:
    # a function mask reads the params, or the updates (same structure and shapes) when update gets none
    return mask_leaves(api, mask, updates if params is None else params)


@rebuildable
def masked(inner: GradientTransformation, mask: Mask) -> GradientTransformation:
    """Apply ``inner`` to the leaves ``mask`` selects; pass the others through unchanged.

    ``inner`` sees the params and updates with every leaf masked out replaced
    by a :class:`MaskedNode` (an empty subtree), so it keeps no state for them
    and a global transform inside (:func:`clip_by_global_norm`) sees the
    selected leaves only. Scope: that of ``inner``, over the selected leaves.

    Args:
        inner: the transform to apply.
        mask: a pytree of bools with the params' structure, or a prefix of it
            (``{"encoder": False, "head": True}`` covers each subtree whole); or
            a function returning one, called with the params (with the updates
            when ``update`` gets no params: they have the same structure and
            shapes), so it should read names, structure and shapes only. A
            ``None`` mask leaf counts as ``False``. Under ``torch.compile``
            the function is traced at every step: key names by dict or list
            code, or ``optree.tree_map`` (torch 2.13 does not trace
            ``optree.tree_map_with_path`` over a compiled function's inputs).

    Example:
        >>> import torch, paramtx as ptx
        >>> params = {"w": torch.ones(2, 2), "b": torch.ones(2)}
        >>> tx = ptx.masked(ptx.add_decayed_weights(0.5), lambda p: {k: v.ndim > 1 for k, v in p.items()})
        >>> grads = {"w": torch.zeros(2, 2), "b": torch.zeros(2)}
        >>> tx.update(grads, tx.init(params), params)[0]   # the decay on matrices only
        {'w': tensor([[0.5000, 0.5000],
                [0.5000, 0.5000]]), 'b': tensor([0., 0.])}
    """
    api = "masked"
    if not isinstance(inner, GradientTransformation):
        raise TypeError(f"{api}: inner must be a GradientTransformation, got {inner!r} (type {type(inner).__name__})")
    check_mask(api, mask)

    def init_fn(params: Params) -> MaskedState:
        _tree.tensor_leaves(api, params)  # (checks the params' leaves, naming a bad one)
        return MaskedState(inner.init(_restricted(params, mask_leaves(api, mask, params))))

    def update_fn(updates: Updates, state: MaskedState, params: Optional[Params] = None):
        _validate.check_state(api, state, MaskedState)
        leaves, spec = _tree.checked_leaves(api, updates)
        if params is not None:
            _tree.leaves_like(api, spec, params, "params")  # (the params have the updates' structure)
        keep = _select(api, mask, params, updates)
        inner_params = None if params is None else _restricted(params, keep)
        out, inner_state = inner.update(_restricted(updates, keep), state.inner_state, inner_params)
        merged = list(leaves)
        _merged(api, "inner", merged, out, keep)
        return _tree.unflatten(spec, merged), MaskedState(inner_state)

    return GradientTransformation(init_fn, update_fn)


class MultiTransformState(NamedTuple):
    """The state of :func:`multi_transform`: a dict from label to that label's transform's state.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.multi_transform({"a": ptx.adam(), "s": ptx.sgd(0.1)}, {"w": "a", "b": "s"})
        >>> tx.init({"w": torch.zeros(1), "b": torch.zeros(1)}).inner_states["a"]
        AdamState(count={'w': tensor(0), 'b': MaskedNode()}, mu={'w': tensor([0.]), 'b': MaskedNode()}, nu={'w': tensor([0.]), 'b': MaskedNode()})
    """

    inner_states: Any


@rebuildable
def multi_transform(transforms: Mapping[Hashable, GradientTransformation], param_labels: Labels) -> GradientTransformation:
    """Apply a different transform to each part of the tree: the leaves labelled ``k`` get ``transforms[k]``.

    The functional twin of param groups: e.g. per-row normalized steps for the
    weights, plain SGD for the biases, no step for the embeddings (a
    ``scale(0.0)``). Each transform sees the params and updates with every leaf
    of another label replaced by a :class:`MaskedNode` (see :func:`masked`). Scope: each
    transform's, over its leaves.

    Args:
        transforms: a mapping from label to transform.
        param_labels: a pytree of labels with the params' structure, or a
            prefix of it; or a function returning one, called as a
            :func:`masked` mask function. Every label must be a key of
            ``transforms``; a ``None`` label is allowed where the params have
            ``None``.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.multi_transform(
        ...     {"rows": ptx.chain(ptx.normalize(2, param_ndim=1), ptx.scale(-1.0)), "whole": ptx.sgd(0.5)},
        ...     lambda p: {k: "rows" if v.ndim > 1 else "whole" for k, v in p.items()},
        ... )
        >>> params = {"w": torch.zeros(2, 2), "b": torch.zeros(2)}
        >>> grads = {"w": torch.tensor([[3.0, 4.0], [0.0, 2.0]]), "b": torch.tensor([3.0, 4.0])}
        >>> tx.update(grads, tx.init(params), params)[0]
        {'w': tensor([[-0.6000, -0.8000],
                [-0.0000, -1.0000]]), 'b': tensor([-1.5000, -2.0000])}
    """
    api = "multi_transform"
    if not isinstance(transforms, collections.abc.Mapping) or len(transforms) == 0:
        raise TypeError(f"{api}: transforms must be a non-empty mapping from label to transform, got {transforms!r:.200}")
    transforms = dict(transforms)
    for label, transform in transforms.items():
        if not isinstance(transform, GradientTransformation):
            raise TypeError(
                f"{api}: transforms[{label!r}] must be a GradientTransformation, got {transform!r} "
                f"(type {type(transform).__name__})"
            )
    if not callable(param_labels):
        _check_labels(api, _tree.flatten(param_labels)[0], transforms, param_labels)

    def labels_of(tree: Any, leaves: list[Any]) -> list[Any]:
        labels = _broadcast(api, "param_labels", param_labels, tree)
        _check_labels(api, labels, transforms, tree, leaves)
        return labels

    def init_fn(params: Params) -> MultiTransformState:
        leaves, _ = _tree.tensor_leaves(api, params)
        labels = labels_of(params, leaves)
        return MultiTransformState(
            {
                label: transform.init(_restricted(params, [mine == label for mine in labels]))
                for label, transform in transforms.items()
            }
        )

    def update_fn(updates: Updates, state: MultiTransformState, params: Optional[Params] = None):
        _validate.check_state(api, state, MultiTransformState)
        if not isinstance(state.inner_states, dict) or set(state.inner_states) != set(transforms):
            raise ValueError(
                f"{api}: state.inner_states must be a dict with one state per label {sorted(transforms, key=repr)!r}, "
                f"got {state.inner_states!r:.200}"
            )
        leaves, spec = _tree.checked_leaves(api, updates)
        if params is not None:
            _tree.leaves_like(api, spec, params, "params")  # (the params have the updates' structure)
        labels = labels_of(updates if params is None else params, leaves)
        merged = list(leaves)
        new_states = {}
        for label, transform in transforms.items():
            keep = [mine == label for mine in labels]
            inner_params = None if params is None else _restricted(params, keep)
            out, new_states[label] = transform.update(_restricted(updates, keep), state.inner_states[label], inner_params)
            _merged(api, f"transforms[{label!r}]", merged, out, keep)
        return _tree.unflatten(spec, merged), MultiTransformState(new_states)

    return GradientTransformation(init_fn, update_fn)


def _check_labels(api: str, labels: list[Any], transforms: dict, tree: Any, leaves: Optional[list[Any]] = None) -> None:
    """Every label names a transform (a ``None`` label only where the leaf is ``None``)."""
    for index, label in enumerate(labels):
        if label is None and (leaves is None or leaves[index] is None):
            continue
        if not isinstance(label, collections.abc.Hashable) or label not in transforms:
            raise ValueError(
                f"{api}: param_labels has {label!r} at {_tree.path_of(tree, index)}, which is not a label of "
                f"transforms (labels: {sorted(transforms, key=repr)!r})"
            )
