"""Clamping and top-q sparsifying shims: ``ClampedGradientOptimizer``,
``ClampedParameterOptimizer``, ``TopQGradientOptimizer``.

Also the ``dq`` random stream shared with :class:`L1qNormedGradientOptim`.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Union

import torch
from torch.optim import SGD

from paramtx._core import validate as _validate
from paramtx._lift import lift
from paramtx._lift.settings import per_element
from paramtx._transforms import sparsity
from paramtx._transforms.elementwise import CLAMP
from paramtx._transforms.top_q import TOP_Q
from paramtx.optim.groups import setting
from paramtx.optim.optimizer import (
    InnerOptimizer,
    OptimParams,
    ParamTransformingOptimizer,
    check_real_in_groups,
    with_defaults,
)

__all__ = ["ClampedGradientOptimizer", "ClampedParameterOptimizer", "TopQGradientOptimizer"]

DQ_STREAM = "paramtx.dq_stream"
"""The key in ``optimizer.state`` of the ``dq`` stream's position: ``{"seed": tensor, "count": tensor}``."""


def start_dq_stream(optimizer: ParamTransformingOptimizer, generator: Optional[torch.Generator]) -> None:
    """Seed the ``dq`` stream from ``generator`` (torch's default one if ``None``) unless it
    runs already or no group has ``dq > 0``.

    Called by ``step()`` before the transforms run, so that a compiled transform
    pass always finds the stream (one graph, no recompile at the second step).
    """
    if DQ_STREAM in optimizer.state or not any(group["dq"] for group in optimizer.param_groups):
        return
    generator = torch.default_generator if generator is None else generator
    seed = torch.randint(0, 2**62, (), generator=generator, device=generator.device)
    optimizer.state[DQ_STREAM] = {"seed": seed, "count": torch.zeros((), dtype=torch.int64, device=seed.device)}


def kept_per_datum(optimizer: ParamTransformingOptimizer, group: Dict[str, Any], batch: torch.Tensor) -> tuple:
    """``(keep, bound)`` for the data of a ``(N, *datum)`` batch (see :func:`paramtx._transforms.sparsity.kept`).

    With ``dq > 0`` this draws the next level of the stream in
    ``optimizer.state[DQ_STREAM]`` and advances it, so ``state_dict()`` /
    ``load_state_dict()`` resume the same sequence of draws.
    """
    q, dq = group["q"], group["dq"]
    draw = None
    if dq:
        stream = optimizer.state[DQ_STREAM]
        draw = sparsity.uniforms(stream["seed"], stream["count"], 1)[0]
        # a new dict each time: load_state_dict adopts the saved one without copying it
        optimizer.state[DQ_STREAM] = {"seed": stream["seed"], "count": stream["count"] + 1}
    # (q may be a tensor of one per datum: then keep is a per-datum setting)
    return sparsity.keep_for(q, dq, draw, math.prod(batch.shape[1:]))


def check_generator(api: str, generator: object) -> Optional[torch.Generator]:
    """``None`` (torch's default generator) or a ``torch.Generator``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"{api}: generator must be a torch.Generator or None, got {generator!r} (type {type(generator).__name__})"
        )
    return generator


def clamp_bounds(group: Dict[str, Any]) -> Dict[str, Any]:
    """The ``CLAMP`` options of a group's ``clamp_min``/``clamp_max`` (numbers, or tensors
    of one bound per element, NaN where ``clamp_min > clamp_max``)."""
    low, high = group["clamp_min"], group["clamp_max"]
    if low is not None and high is not None and (isinstance(low, torch.Tensor) or isinstance(high, torch.Tensor)):
        low, high = _validate.nan_where_empty(low, high)
    return dict(low=per_element("clamp_min", low), high=per_element("clamp_max", high))


class _ClampedOptim(ParamTransformingOptimizer):
    """Shared constructor and checks of the two clamping optimizers."""

    def __init__(
        self,
        params: Optional[OptimParams] = None,
        InnerOpt: InnerOptimizer = SGD,
        *,
        clamp_min: Optional[float] = None,
        clamp_max: Optional[float] = None,
        defaults: Optional[Dict[str, Any]] = None,
        param_ndim: Optional[int] = None,
        **inner_opt_kwargs: Any,
    ) -> None:
        defaults = with_defaults(defaults, clamp_min=clamp_min, clamp_max=clamp_max)
        super().__init__(params, InnerOpt, defaults=defaults, param_ndim=param_ndim, **inner_opt_kwargs)

    def _check_param_group(self, group: Dict[str, Any]) -> None:
        super()._check_param_group(group)
        where = self._where(group)
        for key in ("clamp_min", "clamp_max"):  # numbers, or tensors of one per element of the batch view
            if setting(where, group, key) is not None:
                check_real_in_groups(where, group, key, per="element")
        low, high = group["clamp_min"], group["clamp_max"]
        if low is None and high is None:
            raise ValueError(f"{where}: clamp_min or clamp_max must be given, got clamp_min=None, clamp_max=None")
        tensors = isinstance(low, torch.Tensor) or isinstance(high, torch.Tensor)  # (values not read: NaN if empty)
        if low is not None and high is not None and not tensors and low > high:
            raise ValueError(
                f"{where}: clamp_min must satisfy clamp_min <= clamp_max, got clamp_min={low!r}, clamp_max={high!r}"
            )


class ClampedGradientOptimizer(_ClampedOptim):
    """Clamp each gradient element into ``[clamp_min, clamp_max]`` before ``InnerOpt.step()``.

    Scope: per element (``param_ndim`` has no effect). Either bound may be
    ``None``; both can be set per parameter group, as numbers or tensors of one
    bound per element (broadcastable to the hook's batch view). The clamp is
    :func:`paramtx.clamp`, applied in place (a NaN or infinite element becomes NaN).

    Example:
        >>> import torch
        >>> from paramtx.optim import ClampedGradientOptimizer
        >>> w = torch.zeros(3, requires_grad=True)
        >>> opt = ClampedGradientOptimizer([w], clamp_min=-1.0, clamp_max=0.5, lr=1.0)
        >>> w.backward(gradient=torch.tensor([-4.0, 0.25, 2.0]))
        >>> opt.step()
        >>> w.grad, w
        (tensor([-1.0000,  0.2500,  0.5000]), tensor([ 1.0000, -0.2500, -0.5000], requires_grad=True))
    """

    def _pre_step_transform_(self, param: torch.Tensor, optim_group: Dict[str, Any]) -> None:
        if param.grad is None:
            return
        lift.apply_(self._api(), CLAMP, None, param.grad, **clamp_bounds(optim_group))


class ClampedParameterOptimizer(_ClampedOptim):
    """Clamp each parameter element into ``[clamp_min, clamp_max]`` after ``InnerOpt.step()``.

    Scope: per element. This is the projection :func:`paramtx.project_box`
    (with either bound optional), applied in place.

    Example:
        >>> import torch
        >>> from paramtx.optim import ClampedParameterOptimizer
        >>> w = torch.tensor([0.5, 0.9], requires_grad=True)
        >>> opt = ClampedParameterOptimizer([w], clamp_min=0.0, clamp_max=1.0, lr=1.0)
        >>> w.backward(gradient=torch.tensor([1.0, -1.0]))
        >>> opt.step()
        >>> w
        tensor([0., 1.], requires_grad=True)
    """

    def _post_step_transform_(self, param: torch.Tensor, optim_group: Dict[str, Any]) -> None:
        lift.apply_(self._api(), CLAMP, None, param, **clamp_bounds(optim_group))


class TopQGradientOptimizer(ParamTransformingOptimizer):
    """Keep the ``round((1 - q) * D)`` largest-magnitude gradient elements of each datum, zero the rest.

    Then ``InnerOpt.step()`` updates the parameters. Scope: per datum (``D``
    elements; the ``param_ndim`` rule of :func:`paramtx.to_batch`); the maths is
    :func:`paramtx.top_q`'s. ``q`` and ``dq`` can be set per parameter group;
    ``q`` may be a tensor of one per datum (shape ``(N,)``, or 0-d).

    With ``dq > 0`` each parameter draws its own ``q`` at each step, uniformly
    from ``[max(0, q - dq), min(1, q + dq)]``. The draws come from a stream
    seeded once from ``generator`` (torch's default generator if ``None``) at the
    first step; its position is kept in
    ``optimizer.state`` so ``state_dict()`` / ``load_state_dict()`` resume the
    same draws.

    Example:
        >>> import torch
        >>> from paramtx.optim import TopQGradientOptimizer
        >>> w = torch.zeros(2, 3, requires_grad=True)
        >>> opt = TopQGradientOptimizer([w], q=0.5, lr=1.0, param_ndim=1)   # 2 of 3 per row
        >>> w.backward(gradient=torch.tensor([[1.0, -3.0, 2.0], [0.5, 0.1, -0.2]]))
        >>> opt.step()
        >>> w.grad
        tensor([[ 0.0000, -3.0000,  2.0000],
                [ 0.5000,  0.0000, -0.2000]])
    """

    def __init__(
        self,
        params: OptimParams,
        InnerOpt: InnerOptimizer = SGD,
        *,
        q: float,
        dq: float = 0.0,
        param_ndim: Union[int, None] = -1,
        defaults: Optional[Dict[str, Any]] = None,
        generator: Optional[torch.Generator] = None,
        **inner_opt_kwargs: Any,
    ) -> None:
        self._generator = check_generator(self._api(), generator)
        defaults = with_defaults(defaults, q=q, dq=dq)
        super().__init__(params, InnerOpt=InnerOpt, defaults=defaults, param_ndim=param_ndim, **inner_opt_kwargs)

    def _check_param_group(self, group: Dict[str, Any]) -> None:
        super()._check_param_group(group)
        check_real_in_groups(self._where(group), group, "q", per="datum", low=0.0, high=1.0)
        check_real_in_groups(self._where(group), group, "dq", low=0.0, high=1.0)

    def _prepare_step_(self) -> None:
        start_dq_stream(self, self._generator)

    def _pre_step_transform_(self, param: torch.Tensor, optim_group: Dict[str, Any]) -> None:
        grad = param.grad
        if grad is None:
            return
        keep, bound = kept_per_datum(self, optim_group, grad)
        lift.apply_(self._api(), TOP_Q, -1, grad, keep=keep, bound=bound)
