"""Pytree plumbing: map a leaf function over updates, leaf-aligned with params.

Updates, params and per-leaf state are optree pytrees. ``None`` leaves are kept
as leaves (``none_is_leaf=True``) so that an update of ``None`` ("no gradient for
this parameter") lines up with its parameter and passes through untouched.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import optree
import torch


def flatten(tree: Any) -> tuple[list[Any], optree.PyTreeSpec]:
    """Leaves (``None`` included) and the structure of ``tree``."""
    return optree.tree_flatten(tree, none_is_leaf=True)


def unflatten(spec: optree.PyTreeSpec, leaves: Sequence[Any]) -> Any:
    return optree.tree_unflatten(spec, list(leaves))


def leaves_like(api: str, spec: optree.PyTreeSpec, tree: Any, name: str) -> list[Any]:
    """Leaves of ``tree`` laid out as ``spec``; a clear error if it does not fit."""
    try:
        return spec.flatten_up_to(tree)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{api}: {name} must have the same tree structure as the updates; "
            f"updates have {spec}, {name} has "
            f"{optree.tree_structure(tree, none_is_leaf=True)}"
        ) from error


def path_of(tree: Any, index: int) -> str:
    """A readable path to leaf ``index`` of ``tree``, for error messages."""
    paths, _, _ = optree.tree_flatten_with_path(tree, none_is_leaf=True)
    return "leaf " + ("/".join(map(str, paths[index])) or "<root>")


def check_leaf(api: str, name: str, leaf: Any, path: str) -> None:
    """A leaf to transform is a dense real floating-point tensor."""
    if not isinstance(leaf, torch.Tensor):
        raise TypeError(
            f"{api}: every leaf of {name} must be a torch.Tensor or None, "
            f"got {type(leaf).__name__} at {path}"
        )
    if leaf.layout != torch.strided:
        raise TypeError(
            f"{api}: {name} must be dense tensors, got layout {leaf.layout} at {path}; "
            f"convert sparse gradients with .to_dense()"
        )
    if not leaf.is_floating_point():
        raise TypeError(
            f"{api}: {name} must be real floating-point tensors, got dtype {leaf.dtype} at {path}"
        )


def checked_leaves(api: str, tree: Any, name: str = "updates") -> tuple[list[Any], optree.PyTreeSpec]:
    """Flatten ``tree`` and check that every non-``None`` leaf can be transformed."""
    leaves, spec = flatten(tree)
    for index, leaf in enumerate(leaves):
        if leaf is None:
            continue
        if (
            not isinstance(leaf, torch.Tensor)
            or leaf.layout != torch.strided
            or not leaf.is_floating_point()
        ):
            check_leaf(api, name, leaf, path_of(tree, index))
    return leaves, spec


def check_alike(
    api: str,
    updates: Any,
    leaves: Sequence[Any],
    others: Sequence[Any],
    name: str,
    *,
    dtype: bool = False,
    required: bool = False,
) -> None:
    """Each of ``others`` (leaves of params or of a per-leaf state) has the shape of its
    update leaf (and its dtype, if ``dtype``), where both are present, and is present
    wherever the update is if ``required``; the message names the leaf's path."""
    for index, (update, other) in enumerate(zip(leaves, others)):
        if update is not None and other is None and required:
            raise ValueError(f"{api}: the {name} at {path_of(updates, index)} is None, but its update is not")
        if update is None or other is None:
            continue
        if not isinstance(other, torch.Tensor):
            raise TypeError(f"{api}: the {name} at {path_of(updates, index)} must be a tensor, got {type(other).__name__}")
        if other.shape != update.shape or (dtype and other.dtype != update.dtype):
            what = f"shape {tuple(other.shape)}" + (f" and dtype {other.dtype}" if dtype else "")
            raise ValueError(
                f"{api}: the {name} at {path_of(updates, index)} has {what}, its update "
                f"shape {tuple(update.shape)}" + (f" and dtype {update.dtype}" if dtype else "")
                + "; they must be equal"
            )


_SAME = object()  # (map_updates without a param_ndim for fn)


def map_updates(
    api: str,
    fn: Callable[..., torch.Tensor],
    updates: Any,
    *others: Any,
    names: Sequence[str] = ("params",),
    param_ndim: Any = _SAME,
) -> Any:
    """``fn(update, *other_leaves)`` for every non-``None`` update leaf.

    ``others`` (params, per-leaf state) must share the structure of ``updates``;
    ``names`` names them in error messages. Params must have their updates' shapes.
    With ``param_ndim`` (as :func:`paramtx._core.validate.check_param_ndim_spec`
    returns it), ``fn`` is called with the leaf's ``param_ndim=`` as a keyword.
    """
    leaves, spec = checked_leaves(api, updates)
    other_leaves = [leaves_like(api, spec, other, name) for other, name in zip(others, names)]
    for other, name in zip(other_leaves, names):
        if name == "params":  # (fn needs the parameter of every update)
            check_alike(api, updates, leaves, other, "parameter", required=True)
    if param_ndim is _SAME:
        out = [None if leaf is None else fn(leaf, *rest) for leaf, *rest in zip(leaves, *other_leaves)]
    elif param_ndim is None or isinstance(param_ndim, int):  # (the same for every leaf: nothing to resolve)
        out = [None if leaf is None else fn(leaf, *rest, param_ndim=param_ndim) for leaf, *rest in zip(leaves, *other_leaves)]
    else:
        ndims = leaf_param_ndims(api, param_ndim, updates, leaves, spec)
        out = [
            None if leaf is None else fn(leaf, *rest, param_ndim=ndim)
            for leaf, ndim, *rest in zip(leaves, ndims, *other_leaves)
        ]
    return unflatten(spec, out)


def leaf_param_ndims(api: str, param_ndim: Any, updates: Any, leaves: Sequence[Any], spec: optree.PyTreeSpec) -> list:
    """The ``param_ndim`` of each leaf of ``updates``, from an int or ``None`` (the same for
    all), a callable ``(path, shape)`` (``path``: the leaf's tuple of keys), or a pytree of
    ints and ``None``s that is ``updates``' structure or a prefix of it.

    Per-leaf values are checked here, and a misfit names the leaf's path.
    """
    if param_ndim is None or isinstance(param_ndim, int):
        return [param_ndim] * len(leaves)
    if callable(param_ndim):
        paths = optree.tree_paths(updates, none_is_leaf=True)
        ndims: list = [None if leaf is None else param_ndim(path, tuple(leaf.shape)) for path, leaf in zip(paths, leaves)]
    else:
        try:
            full = optree.tree_broadcast_prefix(param_ndim, updates, none_is_leaf=True)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"{api}: param_ndim must be an int, None, a callable, or a pytree whose structure is "
                f"the params' or a prefix of it; the params have {spec}, param_ndim has "
                f"{optree.tree_structure(param_ndim, none_is_leaf=True)} ({error})"
            ) from None
        ndims = spec.flatten_up_to(full)
    for index, (leaf, ndim) in enumerate(zip(leaves, ndims)):
        if leaf is None:
            continue
        if ndim is not None and (isinstance(ndim, bool) or not isinstance(ndim, int)):
            raise TypeError(
                f"{api}: param_ndim at {path_of(updates, index)} must be an int or None, got {ndim!r} "
                f"(type {type(ndim).__name__})"
            )
        if ndim is not None and leaf.dim() > 0 and abs(ndim) > leaf.dim():
            raise ValueError(
                f"{api}: param_ndim={ndim} at {path_of(updates, index)} does not fit its tensor of shape "
                f"{tuple(leaf.shape)} (ndim={leaf.dim()}); |param_ndim| <= ndim must hold"
            )
    return ndims


def param_leaves(api: str, spec: optree.PyTreeSpec, params: Any, *, required: bool) -> list[Any]:
    """The leaves of ``params`` laid out as ``spec`` (``None``s if they are absent and not ``required``)."""
    if required:
        require_params(api, params)
    if params is None:
        return [None] * spec.num_leaves
    return leaves_like(api, spec, params, "params")


def tensor_leaves(api: str, params: Any) -> tuple[list[Any], optree.PyTreeSpec]:
    """The leaves of ``params`` for a transform's ``init``: tensors or ``None``, else a clear error."""
    leaves, spec = flatten(params)
    for index, leaf in enumerate(leaves):
        if leaf is not None and not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f"{api}: params must be a pytree (dict, list, tuple, ...) of tensors, got "
                f"{type(leaf).__name__} at {path_of(params, index)}; pass e.g. "
                f"dict(module.named_parameters()) or list(module.parameters())"
            )
    return leaves, spec


def require_params(api: str, params: Any) -> Any:
    if params is None:
        raise ValueError(f"{api}: this transform needs params; call update(updates, state, params)")
    return params


def zeros_like_tree(api: str, tree: Any) -> Any:
    """A fresh zero tensor for every tensor leaf (``None`` stays ``None``)."""
    leaves, spec = tensor_leaves(api, tree)
    return unflatten(spec, [None if leaf is None else torch.zeros_like(leaf) for leaf in leaves])


def zero_counts(api: str, params: Any) -> Any:
    """A 0-d int64 step count of zero on each parameter's device (``None`` for ``None``)."""
    leaves, spec = tensor_leaves(api, params)
    return unflatten(
        spec,
        [None if p is None else torch.zeros((), dtype=torch.int64, device=p.device) for p in leaves],
    )


def advanced_counts(api: str, counts: Any, updates: Any) -> Any:
    """Step counts plus one where the update is not ``None``."""
    leaves, spec = flatten(updates)
    count_leaves = leaves_like(api, spec, counts, "state")
    return unflatten(spec, [c if u is None else c + 1 for c, u in zip(count_leaves, leaves)])


def first_device(tree: Any) -> torch.device:
    """The device of the first tensor leaf of ``tree`` (the CPU if it has none)."""
    for leaf in flatten(tree)[0]:
        if isinstance(leaf, torch.Tensor):
            return leaf.device
    return torch.device("cpu")
