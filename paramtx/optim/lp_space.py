"""Lp-space shims: signed and Lp-normalized gradients, L1q sparse normalized
gradients, and steps projected onto L2 / L-infinity balls.

``SignedGradientOptim``, ``L1NormedGradientOptim``, ``L2NormedGradientOptim``,
``L1qNormedGradientOptim``, ``L2ProjectedOptim``, ``LinfProjectedOptim``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Dict, Optional, Union

import torch
from torch.optim import SGD

from paramtx._core import validate as _validate
from paramtx._lift import lift
from paramtx._lift.settings import per_datum
from paramtx._transforms.elementwise import CLAMP, SIGN
from paramtx._transforms.lmo import L1Q_LMO
from paramtx._transforms.normalize import NORMALIZE, TINY, datum_norms
from paramtx._transforms.projections import L2_BALL, linf_bounds
from paramtx.optim.misc import TopQGradientOptimizer, check_generator, kept_per_datum, start_dq_stream
from paramtx.optim.optimizer import (
    ChainedParamTransformingOptimizer,
    InnerOptimizer,
    OptimParams,
    ParamTransformingOptimizer,
    check_real_in_groups,
    with_defaults,
)

__all__ = [
    "SignedGradientOptim",
    "L1NormedGradientOptim",
    "L2NormedGradientOptim",
    "L1qNormedGradientOptim",
    "L2ProjectedOptim",
    "LinfProjectedOptim",
]


class BallRadius(ParamTransformingOptimizer):
    """Mixed into a shim whose groups carry the radius of a ball: a real number > 0,
    checked with the group's other settings."""

    _radius_key = "epsilon"
    """The group key of the radius."""
    _radius_label = "epsilon"
    """The radius's name in messages."""

    def _check_param_group(self, group: Dict[str, Any]) -> None:
        super()._check_param_group(group)
        where = self._where(group)
        check_real_in_groups(
            where, group, self._radius_key, label=self._radius_label, per="datum", low=0.0, low_inclusive=False
        )


class _LpNormOptimizer(ParamTransformingOptimizer):
    """Divide each datum of each gradient by its Lp norm (``p = self.p``), then step."""

    _p: Union[int, float]

    def __init__(
        self,
        params: OptimParams,
        InnerOpt: InnerOptimizer = SGD,
        *,
        param_ndim: Optional[int] = -1,
        defaults: Optional[Dict[str, Any]] = None,
        grad_scale: float = 1.0,
        grad_bias: float = 0.0,
        div_by_zero_eps: float = TINY,
        **kwargs: Any,
    ) -> None:
        api = self._api()
        if not hasattr(self, "_p"):
            raise TypeError(f"{api}: a subclass of _LpNormOptimizer must set the class attribute _p")
        _validate.check_p(api, self._p)
        self.div_by_zero_eps = _validate.check_real(api, "div_by_zero_eps", div_by_zero_eps, low=0.0)
        super().__init__(
            params,
            InnerOpt=InnerOpt,
            param_ndim=param_ndim,
            defaults=defaults,
            grad_scale=grad_scale,
            grad_bias=grad_bias,
            **kwargs,
        )

    @property
    def p(self) -> Union[int, float]:
        """The order of the norm."""
        return self._p

    def per_datum_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The Lp norm of each datum of a ``(N, *datum)`` batch, shape ``(N,)``."""
        return datum_norms(x, float(self.p))

    def _pre_step_transform_(self, param: torch.Tensor, optim_group: Dict[str, Any]) -> None:
        if param.grad is None:
            return
        p, eps = float(self._p), self.div_by_zero_eps  # (not self.p: torch.compile breaks its graph on it)
        lift.apply_(self._api(), NORMALIZE, -1, param.grad, p=p, eps=eps)


class SignedGradientOptim(ParamTransformingOptimizer):
    """Replace each gradient element by its sign (``-1``, ``0`` or ``1``) before ``InnerOpt.step()``.

    Scope: per element (so ``param_ndim`` defaults to ``None``). The map is
    :func:`paramtx.sign`, applied in place.

    Example:
        >>> import torch
        >>> from paramtx.optim import SignedGradientOptim
        >>> w = torch.zeros(3, requires_grad=True)
        >>> opt = SignedGradientOptim([w], lr=0.5)
        >>> w.backward(gradient=torch.tensor([-20.0, 0.0, 0.1]))
        >>> opt.step()
        >>> w.grad, w
        (tensor([-1.,  0.,  1.]), tensor([ 0.5000,  0.0000, -0.5000], requires_grad=True))
    """

    def __init__(
        self,
        params: OptimParams,
        InnerOpt: InnerOptimizer = SGD,
        *,
        grad_scale: float = 1.0,
        grad_bias: float = 0.0,
        defaults: Optional[Dict[str, Any]] = None,
        param_ndim: Optional[int] = None,
        **inner_opt_kwargs: Any,
    ) -> None:
        super().__init__(
            params,
            InnerOpt,
            param_ndim=param_ndim,
            grad_scale=grad_scale,
            grad_bias=grad_bias,
            defaults=defaults,
            **inner_opt_kwargs,
        )

    def _pre_step_transform_(self, param: torch.Tensor, optim_group: Dict[str, Any]) -> None:
        if param.grad is None:
            return
        lift.apply_(self._api(), SIGN, None, param.grad)


class L1NormedGradientOptim(_LpNormOptimizer):
    r"""Divide each datum of each gradient by its L1 norm, :math:`g / \max(\|g\|_1, \epsilon)`, then step.

    Scope: per datum (the ``param_ndim`` rule of :func:`paramtx.to_batch`); the
    maths is :func:`paramtx.normalize` with ``p=1``. ``div_by_zero_eps`` bounds
    the norm from below, so a zero gradient stays zero.

    Example:
        >>> import torch
        >>> from paramtx.optim import L1NormedGradientOptim
        >>> w = torch.zeros(2, 2, requires_grad=True)
        >>> opt = L1NormedGradientOptim([w], lr=1.0)                  # per row
        >>> w.backward(gradient=torch.tensor([[1.0, -3.0], [0.0, 0.0]]))
        >>> opt.step()
        >>> w.grad
        tensor([[ 0.2500, -0.7500],
                [ 0.0000,  0.0000]])
    """

    _p = 1


class L2NormedGradientOptim(_LpNormOptimizer):
    r"""Divide each datum of each gradient by its L2 norm, :math:`g / \max(\|g\|_2, \epsilon)`, then step.

    Scope: per datum; the maths is :func:`paramtx.normalize` with ``p=2``.

    Example:
        >>> import torch
        >>> from paramtx.optim import L2NormedGradientOptim
        >>> w = torch.zeros(2, 2, requires_grad=True)
        >>> opt = L2NormedGradientOptim([w], lr=1.0, param_ndim=None)   # whole tensor
        >>> w.backward(gradient=torch.tensor([[0.0, 3.0], [0.0, -4.0]]))
        >>> opt.step()
        >>> w.grad
        tensor([[ 0.0000,  0.6000],
                [ 0.0000, -0.8000]])
    """

    _p = 2


class L2ProjectedOptim(BallRadius, L2NormedGradientOptim):
    """L2-normalize each gradient datum, step, then project each parameter datum onto the L2 ball of radius ``epsilon``.

    Scope: per datum, for both the normalization and the projection
    (:func:`paramtx.normalize`, :func:`paramtx.project_l2_ball`). ``epsilon``
    can be set per parameter group and must be positive; a tensor gives one
    radius per datum (shape ``(N,)``, or 0-d; a datum whose radius is not
    positive comes out as NaNs, as values are not read on the host).

    Example:
        >>> import torch
        >>> from paramtx.optim import L2ProjectedOptim
        >>> w = torch.tensor([[0.0, 0.0], [-0.5, 0.0]], requires_grad=True)
        >>> opt = L2ProjectedOptim([w], epsilon=0.5, lr=1.0)          # per row
        >>> w.backward(gradient=torch.tensor([[-3.0, 4.0], [-1.0, 0.0]]))
        >>> opt.step()
        >>> w                           # row 0: (0.6, -0.8) scaled onto the ball; row 1: inside
        tensor([[ 0.3000, -0.4000],
                [ 0.5000,  0.0000]], requires_grad=True)
    """

    def __init__(
        self,
        params: OptimParams,
        InnerOpt: InnerOptimizer = SGD,
        *,
        epsilon: float,
        param_ndim: Union[int, None] = -1,
        grad_scale: float = 1.0,
        grad_bias: float = 0.0,
        defaults: Optional[Dict[str, Any]] = None,
        div_by_zero_eps: float = TINY,
        **inner_opt_kwargs: Any,
    ) -> None:
        defaults = with_defaults(defaults, epsilon=epsilon)
        super().__init__(
            params,
            InnerOpt=InnerOpt,
            defaults=defaults,
            param_ndim=param_ndim,
            grad_scale=grad_scale,
            grad_bias=grad_bias,
            div_by_zero_eps=div_by_zero_eps,
            **inner_opt_kwargs,
        )

    def _post_step_transform_(self, param: torch.Tensor, optim_group: Dict[str, Any]) -> None:
        radius = per_datum("epsilon", optim_group["epsilon"], _validate.POSITIVE)
        lift.apply_(self._api(), L2_BALL, -1, param, epsilon=radius)


class LinfProjectedOptim(BallRadius, SignedGradientOptim):
    """Take the sign of each gradient element, step, then clamp each parameter into ``[-epsilon, epsilon]``.

    Scope: per element (:func:`paramtx.sign`, :func:`paramtx.project_linf_ball`,
    applied in place). ``epsilon`` can be set per parameter group and must be
    positive; a tensor gives one radius per datum (with ``param_ndim=-1``, say),
    as in :class:`L2ProjectedOptim`.

    Example:
        >>> import torch
        >>> from paramtx.optim import LinfProjectedOptim
        >>> w = torch.tensor([0.5, -0.5], requires_grad=True)
        >>> opt = LinfProjectedOptim([w], epsilon=1.0, lr=0.75)
        >>> w.backward(gradient=torch.tensor([-2.0, -0.01]))
        >>> opt.step()
        >>> w
        tensor([1.0000, 0.2500], requires_grad=True)
    """

    def __init__(
        self,
        params: OptimParams,
        InnerOpt: InnerOptimizer = SGD,
        *,
        epsilon: float,
        param_ndim=None,
        grad_scale: float = 1.0,
        grad_bias: float = 0.0,
        defaults: Optional[Dict[str, Any]] = None,
        **inner_opt_kwargs: Any,
    ) -> None:
        defaults = with_defaults(defaults, epsilon=epsilon)
        super().__init__(
            params,
            InnerOpt=InnerOpt,
            defaults=defaults,
            param_ndim=param_ndim,
            grad_scale=grad_scale,
            grad_bias=grad_bias,
            **inner_opt_kwargs,
        )

    def _post_step_transform_(self, param: torch.Tensor, optim_group: Dict[str, Any]) -> None:
        low, high = linf_bounds(optim_group["epsilon"])
        lift.apply_(self._api(), CLAMP, -1, param, low=low, high=high)


class L1qNormedGradientOptim(ChainedParamTransformingOptimizer):
    """Sparsify each gradient datum to the signs of its top-q elements, L1-normalize it, then step.

    Per datum: keep the ``round((1 - q) * D)`` largest-magnitude elements,
    take their signs, divide by the L1 norm -- the L1q LMO direction of
    :func:`paramtx.lmo_l1q`, computed in one pass. It is the chain
    ``TopQGradientOptimizer``, ``SignedGradientOptim``, ``L1NormedGradientOptim``
    (and its repr says so); ``grad_scale`` then sets the gradient's L1 norm.
    ``q`` and ``dq`` act as in :class:`TopQGradientOptimizer`.

    Example:
        >>> import torch
        >>> from paramtx.optim import L1qNormedGradientOptim
        >>> w = torch.zeros(4, requires_grad=True)
        >>> opt = L1qNormedGradientOptim([w], q=0.5, grad_scale=2.0, lr=1.0, param_ndim=None)
        >>> w.backward(gradient=torch.tensor([0.1, -5.0, 3.0, 0.2]))
        >>> opt.step()
        >>> w.grad
        tensor([ 0., -1.,  1.,  0.])
    """

    def __init__(
        self,
        params: OptimParams,
        InnerOpt: InnerOptimizer = SGD,
        *,
        q: float,
        dq: float = 0.0,
        param_ndim: Union[int, None] = -1,
        grad_scale: float = 1.0,
        grad_bias: float = 0.0,
        defaults: Optional[Dict[str, Any]] = None,
        div_by_zero_eps: float = TINY,
        generator: Optional[torch.Generator] = None,
        **inner_opt_kwargs: Any,
    ) -> None:
        api = self._api()
        self._generator = check_generator(api, generator)
        self.div_by_zero_eps = _validate.check_real(api, "div_by_zero_eps", div_by_zero_eps, low=0.0)
        super().__init__(
            partial(TopQGradientOptimizer, q=q, dq=dq, generator=generator),
            SignedGradientOptim,
            partial(L1NormedGradientOptim, div_by_zero_eps=div_by_zero_eps),
            params=params,
            InnerOpt=InnerOpt,
            defaults=defaults,
            param_ndim=param_ndim,
            grad_scale=grad_scale,
            grad_bias=grad_bias,
            **inner_opt_kwargs,
        )

    def _prepare_step_(self) -> None:
        start_dq_stream(self, self._generator)

    def _pre_step_transform_(self, param: torch.Tensor, optim_group: Dict[str, Any]) -> None:
        # The chain's three transforms as one op: the L1q LMO (the same values).
        grad = param.grad
        if grad is None:
            return
        keep, bound = kept_per_datum(self, optim_group, grad)
        eps = self.div_by_zero_eps
        lift.apply_(self._api(), L1Q_LMO, -1, grad, keep=keep, bound=bound, eps=eps)
