"""``sgd``: the step of ``torch.optim.SGD`` as a transform."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch

from paramtx._core import tree as _tree
from paramtx._core import validate as _validate
from paramtx._core.base import EmptyState, GradientTransformation, Params, Updates, rebuildable
from paramtx._transforms.inject import Hyperparameter, check_hyperparameter, is_zero, plus_scaled, schedulable, times


class SgdState(NamedTuple):
    """With momentum: the momentum buffers and per-leaf step counts (the first
    step skips dampening). Without momentum, ``sgd``'s state is an ``EmptyState``.

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.sgd(lr=0.1, momentum=0.9).init([torch.zeros(2)])
        SgdState(momentum_buffer=[tensor([0., 0.])], count=[tensor(0)])
        >>> ptx.sgd(lr=0.1).init([torch.zeros(2)])
        EmptyState()
    """

    momentum_buffer: Any
    count: Any


@schedulable("lr", "weight_decay")
@rebuildable
def sgd(
    lr: Hyperparameter = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: Hyperparameter = 0.0,
    nesterov: bool = False,
) -> GradientTransformation:
    """The ``torch.optim.SGD`` step: returns ``-lr * d`` for the direction ``d`` that SGD uses.

    With ``d = g + weight_decay * p`` and, given momentum, the buffer
    ``b = momentum * b + (1 - dampening) * d`` (``b = d`` on a leaf's first
    step), the direction is ``b``, or ``d + momentum * b`` with Nesterov.
    Numerically equal to ``torch.optim.SGD`` with the same settings. Scope: per
    element. Needs ``params`` only when ``weight_decay`` is not the number 0.

    ``lr`` and ``weight_decay`` may be numbers, 0-d tensors (their values are
    not read on the host: a negative or NaN one makes the step NaN) or
    schedules of the step count (then the transform is
    ``inject_hyperparams(sgd)(...)``: see :func:`inject_hyperparams`).

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
        >>> tx = ptx.sgd(lr=ptx.exponential_decay(1.0, transition_steps=1, decay_rate=0.5))
        >>> state = tx.init(p)
        >>> for _ in range(3):
        ...     u, state = tx.update(g, state, p)
        ...     print(u)
        tensor([-2.])
        tensor([-1.])
        tensor([-0.5000])
    """
    api = "sgd"
    lr = check_hyperparameter(api, "lr", lr, _validate.NON_NEGATIVE)
    momentum = _validate.check_real(api, "momentum", momentum, low=0.0)
    dampening = _validate.check_real(api, "dampening", dampening)
    weight_decay = check_hyperparameter(api, "weight_decay", weight_decay, _validate.NON_NEGATIVE)
    decays = not is_zero(weight_decay)
    nesterov = _validate.check_bool(api, "nesterov", nesterov)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(
            f"sgd: nesterov=True requires momentum > 0 and dampening = 0, "
            f"got momentum={momentum!r}, dampening={dampening!r}"
        )
    state_type = SgdState if momentum != 0 else EmptyState

    def init_fn(params: Params):
        if momentum == 0:
            return EmptyState()
        return SgdState(_tree.zeros_like_tree(api, params), _tree.zero_counts(api, params))

    def direction(grad: torch.Tensor, param: Optional[torch.Tensor]) -> torch.Tensor:
        if not decays:
            return grad
        assert param is not None  # (update_fn checked that every update has its parameter)
        return plus_scaled(grad, param, weight_decay)

    def step_with_momentum(grad, param, buffer, count):
        d = direction(grad, param)
        buffer = torch.add(buffer * momentum, d, alpha=1 - dampening)
        if dampening != 0:
            buffer = torch.where(count == 0, d, buffer)
        step = torch.add(d, buffer, alpha=momentum) if nesterov else buffer
        return times(step, -lr), buffer

    def update_fn(updates: Updates, state: Any, params: Optional[Params] = None):
        _validate.check_state(api, state, state_type)
        leaves, spec = _tree.checked_leaves(api, updates)
        param_leaves = _tree.param_leaves(api, spec, params, required=decays)
        _tree.check_alike(api, updates, leaves, param_leaves, "parameter", required=decays)
        if momentum == 0:
            steps = [None if g is None else times(direction(g, p), -lr) for g, p in zip(leaves, param_leaves)]
            return _tree.unflatten(spec, steps), state
        buffers = _tree.leaves_like(api, spec, state.momentum_buffer, "state")
        _tree.check_alike(api, updates, leaves, buffers, "momentum buffer", dtype=True)
        counts = _tree.leaves_like(api, spec, state.count, "state")
        steps, new_buffers = [], []
        for g, p, b, c in zip(leaves, param_leaves, buffers, counts):
            step, b = (None, b) if g is None else step_with_momentum(g, p, b, c)
            steps.append(step)
            new_buffers.append(b)
        new_counts = _tree.advanced_counts(api, state.count, updates)
        return _tree.unflatten(spec, steps), SgdState(_tree.unflatten(spec, new_buffers), new_counts)

    return GradientTransformation(init_fn, update_fn)

