"""``frank_wolfe``: the Frank-Wolfe step towards a ball's vertex."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import torch

from paramtx._core import tree as _tree
from paramtx._core import validate as _validate
from paramtx._core.base import GradientTransformation, Params, Updates, rebuildable
from paramtx._lift import lift
from paramtx._lift.numerics import accumulation_dtype
from paramtx._lift.ops import Combined, DatumOp, Result
from paramtx._lift.settings import PerDatum, per_datum
from paramtx._transforms.inject import schedulable
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
    lr: Union[float, torch.Tensor], count: Union[int, torch.Tensor], use_default_lr_schedule: bool, eps: float = TINY
) -> Union[float, torch.Tensor]:
    """The step weight ``alpha``: ``lr / max(eps, lr + k)`` with the default schedule, else ``lr``.

    ``k`` (this parameter's step index) may be a Python int or a 0-d tensor;
    a tensor gives a float64 tensor, so that a compiled step does not recompile
    as ``k`` grows. ``lr`` may be a tensor (0-d, or one per datum): then ``alpha``
    is a float64 tensor of its shape, computed as a number ``lr`` would be.
    """
    if isinstance(lr, torch.Tensor):
        return _tensor_rate(lr.to(torch.float64), count, use_default_lr_schedule, eps)
    if not use_default_lr_schedule:
        return lr
    if lr == 0:  # no step, whatever eps is (lr / (lr + 0) would be 0 / 0 at the first step)
        return torch.zeros((), dtype=torch.float64, device=count.device) if isinstance(count, torch.Tensor) else 0.0
    if isinstance(count, torch.Tensor):
        return lr / torch.clamp(count.to(torch.float64) + lr, min=eps)
    return lr / max(eps, lr + count)


def step_weight(lr: Any, count: Union[int, torch.Tensor], use_default_lr_schedule: bool, eps: float) -> Any:
    """:func:`frank_wolfe_rate` as an option of ``FW_STEP``: for ``lr`` a per-datum
    setting, a per-datum setting of the weights (else a number or a 0-d tensor)."""
    if isinstance(lr, PerDatum):
        return PerDatum(_tensor_rate(lr.value.to(torch.float64), count, use_default_lr_schedule, eps), lr.name)
    return frank_wolfe_rate(lr, count, use_default_lr_schedule, eps)


def _tensor_rate(lr: torch.Tensor, count: Union[int, torch.Tensor], use_default_lr_schedule: bool, eps: float) -> torch.Tensor:
    if not use_default_lr_schedule:
        return lr
    if isinstance(count, torch.Tensor):  # as a number lr divided by a tensor: the reciprocal, times lr
        rate = torch.clamp(count.to(torch.float64) + lr, min=eps).reciprocal() * lr
    else:  # as Python divides two numbers
        rate = lr / torch.clamp(lr + count, min=eps)
    return torch.where(lr == 0, 0.0, rate)  # no step where lr = 0, whatever eps is


def _step(
    param: torch.Tensor,
    direction: torch.Tensor,
    *,
    alpha: Union[float, torch.Tensor],
    epsilon: Union[float, torch.Tensor],
) -> Result:
    # (1 - alpha) * p - alpha * epsilon * s, in rai-toolbox's order of operations.
    if isinstance(epsilon, torch.Tensor):  # the weights in float64, as numbers would be
        epsilon = epsilon.to(torch.float64)
    weight_p, weight_s = 1 - alpha, -(alpha * epsilon)
    # a weight per datum: in the dtype a number would be cast to (a 0-d one casts itself)
    acc = accumulation_dtype(param.dtype)
    if isinstance(weight_p, torch.Tensor) and weight_p.dim() > 0:
        weight_p = weight_p.to(acc)
    if isinstance(weight_s, torch.Tensor) and weight_s.dim() > 0:
        weight_s = weight_s.to(acc)
    return Combined(param, weight_p, direction, weight_s)


FW_STEP = DatumOp("frank_wolfe", _step, elementwise=True, ieee=True)
"""The next Frank-Wolfe iterate ``(1 - alpha) p - alpha * epsilon * s`` of a parameter ``p``
given its LMO direction ``s``."""


@schedulable("epsilon", "lr")
@rebuildable
def frank_wolfe(
    epsilon: Union[float, torch.Tensor],
    lr: Union[float, torch.Tensor] = 2.0,
    use_default_lr_schedule: bool = True,
    eps: float = TINY,
    param_ndim: Any = -1,
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
        epsilon: radius of the constraint ball (> 0): a number, or a tensor of
            one per datum (broadcastable to the batch shape of each parameter).
        lr: the schedule's constant; without the default schedule it is
            ``alpha`` itself and must lie in ``[0, 1]``. A number or a tensor
            (0-d, e.g. an injected hyperparameter, or one per datum).
        use_default_lr_schedule: use ``alpha_k = lr / (lr + k)``.
        eps: lower bound of the schedule's denominator.
        param_ndim: the data of each parameter, for tensor settings of one value
            per datum (an int, ``None``, or per leaf: see :func:`paramtx.to_batch`).
            Tensor values are not read on the host: a datum whose ``epsilon`` or
            ``lr`` is out of range (or NaN) comes out as NaNs.

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
        >>> tx = ptx.frank_wolfe(epsilon=torch.tensor([1.0, 3.0]))   # one radius per row
        >>> x, s = torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [0.0, -1.0]])
        >>> ptx.apply_updates(x, tx.update(s, tx.init(x), x)[0])
        tensor([[-1.,  0.],
                [ 0.,  3.]])
    """
    api = "frank_wolfe"
    epsilon = _validate.check_setting(api, "epsilon", epsilon, _validate.POSITIVE)
    use_default_lr_schedule = _validate.check_bool(api, "use_default_lr_schedule", use_default_lr_schedule)
    lr_bounds = _validate.Bounds(low=0.0, high=None if use_default_lr_schedule else 1.0)
    lr = _validate.check_setting(api, "lr", lr, lr_bounds)
    eps = _validate.check_real(api, "eps", eps, low=0.0)
    param_ndim = _validate.check_param_ndim_spec(api, param_ndim)

    def init_fn(params: Params) -> FrankWolfeState:
        return FrankWolfeState(count=_tree.zero_counts("frank_wolfe", params))

    def update_fn(updates: Updates, state: FrankWolfeState, params: Optional[Params] = None):
        _validate.check_state(api, state, FrankWolfeState)
        params = _tree.require_params(api, params)
        radius = per_datum("epsilon", epsilon, _validate.POSITIVE)
        rate = per_datum("lr", lr, lr_bounds)

        def leaf_update(
            direction: torch.Tensor, param: torch.Tensor, count: torch.Tensor, param_ndim: Optional[int]
        ) -> torch.Tensor:
            alpha = step_weight(rate, count, use_default_lr_schedule, eps)
            # The step as a param map, like a projection: p' - p (exact when p' is near p).
            point = lift.map_data(api, FW_STEP, param_ndim, param, direction, alpha=alpha, epsilon=radius)
            return point - param

        new_updates = _tree.map_updates(
            api, leaf_update, updates, params, state.count, names=("params", "state"), param_ndim=param_ndim
        )
        return new_updates, FrankWolfeState(_tree.advanced_counts("frank_wolfe", state.count, updates))

    return GradientTransformation(init_fn, update_fn)
