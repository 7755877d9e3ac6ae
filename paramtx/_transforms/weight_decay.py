"""``add_decayed_weights``: add ``weight_decay * p`` to each update (an L2 penalty's gradient)."""

from __future__ import annotations

from typing import Optional

from paramtx._core import tree as _tree
from paramtx._core import validate as _validate
from paramtx._core.base import EmptyState, GradientTransformation, Params, Updates, rebuildable
from paramtx._transforms.composition import Mask, check_mask, mask_leaves
from paramtx._transforms.inject import Hyperparameter, check_hyperparameter, is_zero, plus_scaled, schedulable


@schedulable("weight_decay")
@rebuildable
def add_decayed_weights(weight_decay: Hyperparameter = 0.0, mask: Optional[Mask] = None) -> GradientTransformation:
    r"""Add the decay to every update: :math:`u \to u + wd \cdot p`.

    Put it before the step (``chain(add_decayed_weights(wd), sgd(lr))`` is
    SGD with L2 weight decay; before a ``scale(-lr)`` after Adam's direction, it
    is AdamW's decoupled decay). Scope: per element. Needs ``params`` unless
    ``weight_decay`` is the number 0.

    Args:
        weight_decay: a number ``>= 0``, a 0-d tensor or a schedule (see
            :func:`inject_hyperparams`).
        mask: where the decay applies: a pytree of bools with the params'
            structure (or a prefix of it), or a function of the params
            returning one (as :func:`masked`); ``None``: everywhere.

    Example:
        >>> import torch, paramtx as ptx
        >>> params = {"w": torch.tensor([2.0, -4.0]), "b": torch.tensor([2.0])}
        >>> tx = ptx.add_decayed_weights(0.5, mask={"w": True, "b": False})
        >>> tx.update({"w": torch.tensor([1.0, 1.0]), "b": torch.tensor([1.0])}, tx.init(params), params)[0]
        {'w': tensor([ 2., -1.]), 'b': tensor([1.])}
    """
    api = "add_decayed_weights"
    weight_decay = check_hyperparameter(api, "weight_decay", weight_decay, _validate.NON_NEGATIVE)
    if mask is not None:
        check_mask(api, mask)
    decays = not is_zero(weight_decay)

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates: Updates, state: EmptyState, params: Optional[Params] = None):
        _validate.check_state(api, state, EmptyState)
        leaves, spec = _tree.checked_leaves(api, updates)
        if not decays:
            return updates, state
        param_leaves = _tree.param_leaves(api, spec, params, required=True)
        _tree.check_alike(api, updates, leaves, param_leaves, "parameter", required=True)
        selected = [True] * len(leaves) if mask is None else mask_leaves(api, mask, params)
        decayed = [
            g if g is None or not chosen else plus_scaled(g, p, weight_decay)
            for g, p, chosen in zip(leaves, param_leaves, selected)
        ]
        return _tree.unflatten(spec, decayed), state

    return GradientTransformation(init_fn, update_fn)
