"""Frank-Wolfe shims: the ``FrankWolfe`` inner optimizer and the LMO-transforming
``L1FrankWolfe``, ``L1qFrankWolfe``, ``L2FrankWolfe``, ``LinfFrankWolfe``.

Each LMO-transforming optimizer turns the gradient into the unit-ball
direction ``s`` of its norm (per datum), and ``FrankWolfe`` then moves each
parameter to ``(1 - alpha_k) p - alpha_k * epsilon * s`` (see
:func:`paramtx.frank_wolfe`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Union

import torch
from torch.optim import Optimizer

from paramtx._core import validate as _validate
from paramtx._lift import lift
from paramtx._lift.settings import per_datum
from paramtx._transforms.frank_wolfe import FW_STEP, step_weight
from paramtx._transforms.lmo import L1_LMO
from paramtx._transforms.normalize import TINY
from paramtx.optim.lp_space import BallRadius, L1qNormedGradientOptim, L2NormedGradientOptim, SignedGradientOptim
from paramtx.optim.groups import CheckedGroups, check_parameters, setting
from paramtx.optim.optimizer import OptimParams, check_real_in_groups

__all__ = ["FrankWolfe", "L1FrankWolfe", "L1qFrankWolfe", "L2FrankWolfe", "LinfFrankWolfe"]


class FrankWolfe(CheckedGroups, Optimizer):
    r"""The Frank-Wolfe step, with the (already transformed) gradient as the LMO direction.

    For each parameter with a gradient ``s``:
    :math:`p \leftarrow (1 - \alpha_k) p - \alpha_k \cdot \text{lmo\_scaling\_factor} \cdot s`,
    with :math:`\alpha_k = lr / \max(\text{div\_by\_zero\_eps}, lr + k)` under the
    default schedule (``k``: this parameter's step index, from 0, kept in
    ``state[p]["step"]``) and :math:`\alpha_k = lr` otherwise, where ``0 <= lr <= 1``
    must hold. The maths is :func:`paramtx.frank_wolfe`'s. ``lr`` and
    ``lmo_scaling_factor`` can be set per parameter group, as numbers or tensors
    of one value per datum (by the group's ``param_ndim``, ``-1`` if it has none).

    Example:
        >>> import torch
        >>> from paramtx.optim import FrankWolfe
        >>> w = torch.tensor([1.0, 1.0], requires_grad=True)
        >>> opt = FrankWolfe([w], lr=1.0, lmo_scaling_factor=2.0)
        >>> w.backward(gradient=torch.tensor([1.0, 0.0]))
        >>> opt.step()                      # alpha_0 = 1 / (1 + 0)
        >>> w
        tensor([-2.,  0.], requires_grad=True)
        >>> opt.step()                      # alpha_1 = 1 / 2
        >>> w, opt.state[w]
        (tensor([-2.,  0.], requires_grad=True), {'step': 2})
    """

    def __init__(
        self,
        params: OptimParams,
        *,
        lr: float = 2.0,
        lmo_scaling_factor: float = 1.0,
        use_default_lr_schedule: bool = True,
        div_by_zero_eps: float = TINY,
    ) -> None:
        api = self._api()
        self._eps = _validate.check_real(api, "div_by_zero_eps", div_by_zero_eps, low=0.0)
        self._use_default_lr_schedule = _validate.check_bool(api, "use_default_lr_schedule", use_default_lr_schedule)
        super().__init__(params, dict(lr=lr, lmo_scaling_factor=lmo_scaling_factor))
        self._constructed = True
        self._check_groups(force=True)

    def _check_param_group(self, group: Dict[str, Any]) -> None:
        where = self._where(group)
        check_parameters(where, group)
        high = None if self._use_default_lr_schedule else 1.0
        # numbers, or tensors of one per datum (param_ndim: the group's, if it has one)
        check_real_in_groups(where, group, "lr", per="datum", low=0.0, high=high)
        check_real_in_groups(where, group, "lmo_scaling_factor", per="datum")

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if getattr(self, "_constructed", False):
            try:
                self._check_groups()
            except Exception:
                self.param_groups.pop()
                raise

    def __setstate__(self, state: Dict[str, Any]) -> None:
        if "_eps" in state:  # unpickling or copying
            self.__dict__.update(state)
        else:  # torch.optim's load_state_dict
            super().__setstate__(state)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        self._check_groups()  # (a scheduler may have moved lr out of range: nothing is written then)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        api = self._api()
        for group in self.param_groups:
            lr_bounds = _validate.Bounds(low=0.0, high=None if self._use_default_lr_schedule else 1.0)
            lr = per_datum("lr", group["lr"], lr_bounds)
            scale = per_datum("lmo_scaling_factor", group["lmo_scaling_factor"], _validate.UNBOUNDED)
            param_ndim = group.get("param_ndim", -1)  # (tensor settings: one value per datum)
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                count = state.get("step", 0)
                alpha = step_weight(lr, count, self._use_default_lr_schedule, self._eps)
                lift.apply_(api, FW_STEP, param_ndim, param, param.grad, alpha=alpha, epsilon=scale)
                state["step"] = count + 1
        return loss


class _FrankWolfeBall(BallRadius):
    """The radius ``epsilon`` is the inner :class:`FrankWolfe`'s ``lmo_scaling_factor``, and > 0."""

    _radius_key = "lmo_scaling_factor"
    _radius_label = "epsilon (lmo_scaling_factor)"


def _check_epsilon(api: str, epsilon: object) -> None:
    # (a tensor, one radius per datum, is checked against the parameters with the groups)
    _validate.check_setting(api, "epsilon", epsilon, _validate.POSITIVE)


class L1FrankWolfe(_FrankWolfeBall):
    """Frank-Wolfe over the L1 ball of radius ``epsilon``: the LMO is a one-hot sign per datum.

    Each gradient datum becomes ``sign(g_i) e_i`` at its largest-magnitude
    element ``i`` -- over the whole datum, whatever its number of dims
    (:func:`paramtx.lmo_l1`; rai-toolbox 0.2.1 raises ``IndexError`` for data
    with more than one dim) -- then :class:`FrankWolfe` steps.

    Example:
        >>> import torch
        >>> from paramtx.optim import L1FrankWolfe
        >>> w = torch.zeros(2, 2, 2, requires_grad=True)             # 2 data of shape (2, 2)
        >>> opt = L1FrankWolfe([w], epsilon=1.0)
        >>> w.backward(gradient=torch.tensor([[[0.1, 0.2], [-3.0, 0.0]], [[0.0, 0.5], [0.1, 0.2]]]))
        >>> opt.step()
        >>> w
        tensor([[[ 0.,  0.],
                 [ 1.,  0.]],
        <BLANKLINE>
                [[ 0., -1.],
                 [ 0.,  0.]]], requires_grad=True)
    """

    def __init__(
        self,
        params: OptimParams,
        *,
        epsilon: float,
        lr: float = 2.0,
        use_default_lr_schedule: bool = True,
        param_ndim: Union[int, None] = -1,
        div_by_zero_eps: float = TINY,
        compile: bool = False,
    ) -> None:
        _check_epsilon(self._api(), epsilon)
        super().__init__(
            params,
            InnerOpt=FrankWolfe,
            lmo_scaling_factor=epsilon,
            lr=lr,
            use_default_lr_schedule=use_default_lr_schedule,
            param_ndim=param_ndim,
            div_by_zero_eps=div_by_zero_eps,
            compile=compile,
        )


    def _pre_step_transform_(self, param: torch.Tensor, optim_group: Dict[str, Any]) -> None:
        if param.grad is None:
            return
        lift.apply_(self._api(), L1_LMO, -1, param.grad)


class L1qFrankWolfe(_FrankWolfeBall, L1qNormedGradientOptim):
    """Frank-Wolfe over the L1 ball of radius ``epsilon`` with the sparse L1q LMO.

    Each gradient datum becomes the L1-normalized sign of its top-q elements
    (:func:`paramtx.lmo_l1q`, as in :class:`L1qNormedGradientOptim`), then
    :class:`FrankWolfe` steps. ``q`` and ``dq`` act as in
    :class:`TopQGradientOptimizer`. Useful for sparse perturbations.

    Example:
        >>> import torch
        >>> from paramtx.optim import L1qFrankWolfe
        >>> w = torch.zeros(4, requires_grad=True)
        >>> opt = L1qFrankWolfe([w], q=0.5, epsilon=2.0, param_ndim=None)
        >>> w.backward(gradient=torch.tensor([0.1, -5.0, 3.0, 0.2]))
        >>> opt.step()
        >>> w
        tensor([ 0.,  1., -1.,  0.], requires_grad=True)
    """

    def __init__(
        self,
        params: OptimParams,
        *,
        q: float,
        epsilon: float,
        dq: float = 0.0,
        lr: float = 2.0,
        use_default_lr_schedule: bool = True,
        param_ndim: Union[int, None] = -1,
        div_by_zero_eps: float = TINY,
        generator: Optional[torch.Generator] = None,
        compile: bool = False,
    ) -> None:
        _check_epsilon(self._api(), epsilon)
        super().__init__(
            params,
            InnerOpt=FrankWolfe,
            lmo_scaling_factor=epsilon,
            q=q,
            dq=dq,
            param_ndim=param_ndim,
            div_by_zero_eps=div_by_zero_eps,
            generator=generator,
            lr=lr,
            use_default_lr_schedule=use_default_lr_schedule,
            compile=compile,
        )



class L2FrankWolfe(_FrankWolfeBall, L2NormedGradientOptim):
    """Frank-Wolfe over the L2 ball of radius ``epsilon``: the LMO is ``g / ||g||_2`` per datum.

    Example:
        >>> import torch
        >>> from paramtx.optim import L2FrankWolfe
        >>> w = torch.zeros(2, requires_grad=True)
        >>> opt = L2FrankWolfe([w], epsilon=1.0, param_ndim=None)
        >>> w.backward(gradient=torch.tensor([3.0, -4.0]))
        >>> opt.step()
        >>> w
        tensor([-0.6000,  0.8000], requires_grad=True)
    """

    def __init__(
        self,
        params: OptimParams,
        *,
        epsilon: float,
        lr: float = 2.0,
        use_default_lr_schedule: bool = True,
        param_ndim: Union[int, None] = -1,
        div_by_zero_eps: float = TINY,
        compile: bool = False,
    ) -> None:
        _check_epsilon(self._api(), epsilon)
        super().__init__(
            params,
            InnerOpt=FrankWolfe,
            lmo_scaling_factor=epsilon,
            lr=lr,
            use_default_lr_schedule=use_default_lr_schedule,
            param_ndim=param_ndim,
            div_by_zero_eps=div_by_zero_eps,
            compile=compile,
        )



class LinfFrankWolfe(_FrankWolfeBall, SignedGradientOptim):
    """Frank-Wolfe over the L-infinity ball of radius ``epsilon``: the LMO is ``sign(g)``.

    Example:
        >>> import torch
        >>> from paramtx.optim import LinfFrankWolfe
        >>> w = torch.zeros(3, requires_grad=True)
        >>> opt = LinfFrankWolfe([w], epsilon=0.5)
        >>> w.backward(gradient=torch.tensor([3.0, 0.0, -0.1]))
        >>> opt.step()
        >>> w
        tensor([-0.5000,  0.0000,  0.5000], requires_grad=True)
    """

    def __init__(
        self,
        params: OptimParams,
        *,
        epsilon: float,
        lr: float = 2.0,
        use_default_lr_schedule: bool = True,
        param_ndim: Union[int, None] = -1,
        div_by_zero_eps: float = TINY,
        compile: bool = False,
    ) -> None:
        _check_epsilon(self._api(), epsilon)
        super().__init__(
            params,
            InnerOpt=FrankWolfe,
            lmo_scaling_factor=epsilon,
            lr=lr,
            use_default_lr_schedule=use_default_lr_schedule,
            param_ndim=param_ndim,
            div_by_zero_eps=div_by_zero_eps,
            compile=compile,
        )

