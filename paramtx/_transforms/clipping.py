"""``clip_by_global_norm``: scale every update down so that the tree's L2 norm is at most ``max_norm``."""

from __future__ import annotations

from typing import Optional

import torch

from paramtx._core import tree as _tree
from paramtx._core import validate as _validate
from paramtx._core.base import EmptyState, GradientTransformation, Params, Updates, rebuildable
from paramtx._lift.dtensor import is_dtensor
from paramtx._lift.numerics import may_inspect, scaled_norm
from paramtx._transforms.inject import Hyperparameter, check_hyperparameter, schedulable, times

CLIP_EPS = 1e-6
"""What ``torch.nn.utils.clip_grad_norm_`` adds to the norm it divides by."""


def _l2_norm(x: torch.Tensor) -> torch.Tensor:
    """The L2 norm of all of ``x``, scale-safe (see :mod:`paramtx._lift.numerics`), 0-d, in the accumulation dtype."""
    x = x.reshape(1) if x.dim() == 0 else x
    # over every dim, not over a flattened view: a sharded tensor may have none
    norm = scaled_norm(x, 2.0, tuple(range(x.dim())), inspect=may_inspect(x))
    value = (norm.norm / norm.scale).reshape(())
    return value.full_tensor() if is_dtensor(value) else value  # a replicated 0-d DTensor


def global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of the concatenation of ``tensors`` (non-empty; none of them empty).

    Each tensor's norm is taken in its accumulation dtype (float32 for half
    precision), then the norm of those norms in the widest of them, on the
    first tensor's device, as ``torch.nn.utils.clip_grad_norm_`` computes it
    but scale-safe: trees of norm 1e-30 or 1e30 in float32 do not under- or
    overflow.
    """
    norms = [_l2_norm(t) for t in tensors]
    dtype = torch.float64 if any(n.dtype == torch.float64 for n in norms) else torch.float32
    device = tensors[0].device
    return _l2_norm(torch.stack([n.to(device=device, dtype=dtype) for n in norms]))


@schedulable("max_norm")
@rebuildable
def clip_by_global_norm(max_norm: Hyperparameter) -> GradientTransformation:
    r"""Scale all updates by :math:`\min(1, \mathrm{max\_norm} / (\|u\|_2 + 10^{-6}))`, the norm taken over the whole tree.

    Numerically ``torch.nn.utils.clip_grad_norm_(grads, max_norm)`` (its
    :math:`10^{-6}` included), without its host sync or in-place write, and
    scale-safe (see :func:`global_norm`). Scope: global over the tree (inside
    :func:`masked` or :func:`multi_transform`: over the leaves selected). A
    NaN or an inf anywhere makes every update NaN (torch keeps NaN for NaN,
    but for an inf zeroes the finite elements: a finite step out of a
    non-finite gradient, which paramtx never takes).

    Args:
        max_norm: the largest norm let through, ``>= 0``: a number, a 0-d
            tensor or a schedule (see :func:`inject_hyperparams`).

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.clip_by_global_norm(1.0)
        >>> grads = {"a": torch.tensor([3.0]), "b": torch.tensor([0.0, 4.0])}   # norm 5
        >>> tx.update(grads, tx.init(None))[0]
        {'a': tensor([0.6000]), 'b': tensor([0.0000, 0.8000])}
    """
    api = "clip_by_global_norm"
    max_norm = check_hyperparameter(api, "max_norm", max_norm, _validate.NON_NEGATIVE)

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates: Updates, state: EmptyState, params: Optional[Params] = None):
        del params
        leaves, spec = _tree.checked_leaves(api, updates)
        present = [leaf for leaf in leaves if leaf is not None and leaf.numel() > 0]
        if not present:
            return updates, state
        norm = global_norm(present)
        factor = (max_norm / (norm + CLIP_EPS)).clamp(max=1.0)
        factor = torch.where(torch.isfinite(norm), factor, torch.nan)
        clipped = [None if leaf is None else times(leaf, factor.to(leaf.device)) for leaf in leaves]
        return _tree.unflatten(spec, clipped), state

    return GradientTransformation(init_fn, update_fn)
