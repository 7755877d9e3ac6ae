"""``frank_wolfe``: the Frank-Wolfe step towards a ball's vertex."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import torch

from paramtx._core import tree as _tree
from paramtx._core import validate as _validate
from paramtx._core.base import GradientTransformation, Params, Updates, rebuildable
from paramtx._lift import lift
from paramtx._lift.ops import Combined, DatumOp, Result
from paramtx._transforms.normalize import TINY


class FrankWolfeState(NamedTuple):
    """Per-parameter step indices ``k`` (0-d int64 tensors, ``None`` for ``None`` params).

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.frank_wolfe(epsilon=1.0).init({"w": torch.zeros(3), "frozen": None})
        FrankWolfeState(count={'w': tensor(0), 'frozen': None})
    """

    count: Any


def frank_wolfe_rate(
    lr: float, count: Union[int, torch.Tensor], use_default_lr_schedule: bool, eps: float = TINY
) -> Union[float, torch.Tensor]:
    """The step weight ``alpha``: ``lr / max(eps, lr + k)`` with the default schedule, else ``lr``.

    ``k`` (this parameter's step index) may be a Python int or a 0-d tensor;
    a tensor gives a float64 tensor, so that a compiled step does not recompile
    as ``k`` grows.
    """
    if not use_default_lr_schedule:
        return lr
    if lr == 0:  # no step, whatever eps is (lr / (lr + 0) would be 0 / 0 at the first step)
        return torch.zeros((), dtype=torch.float64, device=count.device) if isinstance(count, torch.Tensor) else 0.0
    if isinstance(count, torch.Tensor):
        return lr / torch.clamp(count.to(torch.float64) + lr, min=eps)
    return lr / max(eps, lr + count)


def _step(param: torch.Tensor, direction: torch.Tensor, *, alpha: Union[float, torch.Tensor], epsilon: float) -> Result:
    # (1 - alpha) * p - alpha * epsilon * s, in rai-toolbox's order of operations.
    return Combined(param, 1 - alpha, direction, -(alpha * epsilon))


FW_STEP = DatumOp("frank_wolfe", _step, elementwise=True, ieee=True)
"""The next Frank-Wolfe iterate ``(1 - alpha) p - alpha * epsilon * s`` of a parameter ``p``
given its LMO direction ``s``."""


@rebuildable
def frank_wolfe(
    epsilon: float, lr: float = 2.0, use_default_lr_schedule: bool = True, eps: float = TINY
) -> GradientTransformation:
    r"""Frank-Wolfe over the epsilon-ball whose LMO produced the incoming updates.

    Takes LMO directions ``s`` (put :func:`lmo_l1`, :func:`lmo_l1q`,
    :func:`lmo_l2` or :func:`lmo_linf` before it in a chain) and returns the
    update that moves each parameter to
    :math:`p' = (1 - \alpha_k) p - \alpha_k \epsilon s`, where
    :math:`\alpha_k = lr / \max(eps, lr + k)` with the default schedule (``k``
    = this parameter's step index, from 0) and :math:`\alpha = lr` otherwise.
    Needs ``params``. Scope: per element, given the directions.

    Args:
        epsilon: radius of the constraint ball (> 0).
        lr: the schedule's constant; without the default schedule it is
            ``alpha`` itself and must lie in ``[0, 1]``.
        use_default_lr_schedule: use ``alpha_k = lr / (lr + k)``.
        eps: lower bound of the schedule's denominator.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.chain(ptx.lmo_l1q(q=0.3, param_ndim=None), ptx.frank_wolfe(epsilon=1.8))
        >>> x = torch.tensor([1.0, 1.0, 1.0])
        >>> state = tx.init(x)
        >>> updates, state = tx.update(torch.tensor([0.0, 1.0, 2.0]), state, x)
        >>> ptx.apply_updates(x, updates)          # alpha_0 = 2 / 2 = 1
        tensor([ 0.0000, -0.9000, -0.9000])
        >>> state[1]
        FrankWolfeState(count=tensor(1))
    """
    epsilon = _validate.check_real("frank_wolfe", "epsilon", epsilon, low=0.0, low_inclusive=False)
    use_default_lr_schedule = _validate.check_bool(
        "frank_wolfe", "use_default_lr_schedule", use_default_lr_schedule
    )
    lr = _validate.check_real(
        "frank_wolfe", "lr", lr, low=0.0, high=None if use_default_lr_schedule else 1.0
    )
    eps = _validate.check_real("frank_wolfe", "eps", eps, low=0.0)

    def init_fn(params: Params) -> FrankWolfeState:
        return FrankWolfeState(count=_tree.zero_counts("frank_wolfe", params))

    def leaf_update(direction: torch.Tensor, param: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        alpha = frank_wolfe_rate(lr, count, use_default_lr_schedule, eps)
        # The step as a param map, like a projection: p' - p (exact when p' is near p).
        point = lift.map_data("frank_wolfe", FW_STEP, None, param, direction, alpha=alpha, epsilon=epsilon)
        return point - param

    def update_fn(updates: Updates, state: FrankWolfeState, params: Optional[Params] = None):
        _validate.check_state("frank_wolfe", state, FrankWolfeState)
        params = _tree.require_params("frank_wolfe", params)
        new_updates = _tree.map_updates(
            "frank_wolfe", leaf_update, updates, params, state.count, names=("params", "state")
        )
        return new_updates, FrankWolfeState(_tree.advanced_counts("frank_wolfe", state.count, updates))

    return GradientTransformation(init_fn, update_fn)
