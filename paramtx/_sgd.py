"""``sgd``: the step of ``torch.optim.SGD`` as a transform."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch

from paramtx import _counts, _tree, _validate
from paramtx._base import GradientTransformation, Params, Updates


class SgdState(NamedTuple):
    """Momentum buffers (``None`` without momentum) and, only when
    ``dampening != 0``, per-leaf step counts (the first step skips dampening).

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.sgd(lr=0.1, momentum=0.9).init([torch.zeros(2)])
        SgdState(momentum_buffer=[tensor([0., 0.])], count=None)
    """

    momentum_buffer: Any
    count: Any


def sgd(
    lr: float = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> GradientTransformation:
    """The ``torch.optim.SGD`` step: returns ``-lr * d`` for the direction ``d`` that SGD uses.

    With ``d = g + weight_decay * p`` and, given momentum, the buffer
    ``b = momentum * b + (1 - dampening) * d`` (``b = d`` on a leaf's first
    step), the direction is ``b``, or ``d + momentum * b`` with Nesterov.
    Numerically equal to ``torch.optim.SGD`` with the same settings. Scope: per
    element. Needs ``params`` only when ``weight_decay != 0``.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.sgd(lr=0.1, momentum=0.9)
        >>> p, g = torch.tensor([1.0]), torch.tensor([2.0])
        >>> state = tx.init(p)
        >>> u, state = tx.update(g, state, p)
        >>> u
        tensor([-0.2000])
        >>> u, state = tx.update(g, state, p)       # buffer = 0.9 * 2 + 2
        >>> u
        tensor([-0.3800])
    """
    api = "sgd"
    lr = _validate.check_real(api, "lr", lr, low=0.0)
    momentum = _validate.check_real(api, "momentum", momentum, low=0.0)
    dampening = _validate.check_real(api, "dampening", dampening)
    weight_decay = _validate.check_real(api, "weight_decay", weight_decay, low=0.0)
    nesterov = _validate.check_bool(api, "nesterov", nesterov)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(
            f"sgd: nesterov=True requires momentum > 0 and dampening = 0, "
            f"got momentum={momentum!r}, dampening={dampening!r}"
        )
    tracks_first_step = momentum != 0 and dampening != 0

    def init_fn(params: Params) -> SgdState:
        buffers = _tree.zeros_like_tree(params) if momentum != 0 else None
        counts = _counts.zeros_like_params(params) if tracks_first_step else None
        return SgdState(buffers, counts)

    def direction(grad: torch.Tensor, param: Optional[torch.Tensor]) -> torch.Tensor:
        if weight_decay == 0 or param is None:  # params are required when weight_decay != 0
            return grad
        return torch.add(grad, param, alpha=weight_decay)

    def step_with_momentum(grad, param, buffer, count):
        d = direction(grad, param)
        buffer = torch.add(buffer * momentum, d, alpha=1 - dampening)
        if tracks_first_step:
            buffer = torch.where(count == 0, d, buffer)
        step = torch.add(d, buffer, alpha=momentum) if nesterov else buffer
        return step * -lr, buffer

    def update_fn(updates: Updates, state: SgdState, params: Optional[Params] = None):
        _validate.check_state(api, state, SgdState)
        leaves, spec = _tree.checked_leaves(api, updates)
        param_leaves = _tree.param_leaves(api, spec, params, required=weight_decay != 0)
        if momentum == 0:
            steps = [None if g is None else direction(g, p) * -lr for g, p in zip(leaves, param_leaves)]
            return _tree.unflatten(spec, steps), state
        buffers = _tree.leaves_like(api, spec, state.momentum_buffer, "state")
        counts = _tree.leaves_like(api, spec, state.count, "state") if tracks_first_step else [None] * len(leaves)
        steps, new_buffers = [], []
        for g, p, b, c in zip(leaves, param_leaves, buffers, counts):
            step, b = (None, b) if g is None else step_with_momentum(g, p, b, c)
            steps.append(step)
            new_buffers.append(b)
        new_counts = _counts.advanced(api, state.count, updates) if tracks_first_step else None
        return _tree.unflatten(spec, steps), SgdState(_tree.unflatten(spec, new_buffers), new_counts)

    return GradientTransformation(init_fn, update_fn)
