"""Every torch.optim shim of ``paramtx.optim``, with sample settings.

The shim battery (``test_shims_battery.py``) drives each entry through the same
checks; ``test_registry_covers_every_shim`` fails when a public class of
``paramtx.optim`` is missing here, so a new shim cannot skip the battery.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable, Optional

import torch

import paramtx as ptx
import paramtx.optim as pto
from ptx_testing import DEVICE


@dataclasses.dataclass(frozen=True)
class ShimEntry:
    """One shim configuration.

    Attributes:
        name: the test id.
        cls: the class it exercises (for the coverage check).
        build: ``build(params, **kwargs)`` -> the optimizer; ``kwargs`` are
            more constructor arguments (``param_ndim``, ``compile``, ...).
        inner_kwargs: whether ``build`` accepts inner-optimizer arguments
            (``lr``, ``InnerOpt``): not for the Frank-Wolfe classes, whose inner
            optimizer is fixed.
        in_set: ``in_set(batch, group, slack)``: whether the parameter's ``(N, *datum)``
            batch lies in the set its steps keep it in (a ball, a box), to within a
            relative ``slack`` (the rounding of the parameter's dtype), or None.
        takes_param_ndim: whether the class has a ``param_ndim`` setting.
    """

    name: str
    cls: type
    build: Callable[..., torch.optim.Optimizer]
    inner_kwargs: bool = True
    in_set: Optional[Callable[[torch.Tensor, dict, float], bool]] = None
    takes_param_ndim: bool = True

    def __repr__(self) -> str:
        return self.name


def _l2_ball(batch: torch.Tensor, group: dict, slack: float) -> bool:
    norms = torch.linalg.vector_norm(batch.flatten(1).double(), dim=1)
    return bool((norms <= group["epsilon"] * (1 + slack)).all())


def _linf_ball(batch: torch.Tensor, group: dict, slack: float) -> bool:
    return bool((batch.double().abs() <= group["epsilon"] * (1 + slack)).all())


def _box(batch: torch.Tensor, group: dict, slack: float) -> bool:
    low, high = group["clamp_min"], group["clamp_max"]
    x = batch.double()
    return bool((x >= low - abs(low) * slack).all() and (x <= high + abs(high) * slack).all())


def _fw_ball(p: float) -> Callable[[torch.Tensor, dict, float], bool]:
    """A Frank-Wolfe iterate stays in the ball if it starts there (its radius is ``lmo_scaling_factor``)."""

    def in_set(batch: torch.Tensor, group: dict, slack: float) -> bool:
        norms = torch.linalg.vector_norm(batch.flatten(1).double(), ord=p, dim=1)
        return bool((norms <= group["lmo_scaling_factor"] * (1 + slack)).all())

    return in_set


SHIMS: list[ShimEntry] = [
    ShimEntry("ParamTransformingOptimizer", pto.ParamTransformingOptimizer,
              lambda ps, **kw: pto.ParamTransformingOptimizer(ps, grad_scale=0.5, grad_bias=0.01, **kw)),
    ShimEntry(
        "ChainedParamTransformingOptimizer",
        pto.ChainedParamTransformingOptimizer,
        lambda ps, **kw: pto.ChainedParamTransformingOptimizer(
            partial(pto.TopQGradientOptimizer, q=0.4),
            partial(pto.ClampedGradientOptimizer, clamp_min=-0.5, clamp_max=0.5),
            pto.L2NormedGradientOptim,
            params=ps,
            **kw,
        ),
    ),
    ShimEntry("ClampedGradientOptimizer", pto.ClampedGradientOptimizer,
              lambda ps, **kw: pto.ClampedGradientOptimizer(ps, clamp_min=-0.5, clamp_max=0.3, **kw)),
    ShimEntry("ClampedParameterOptimizer", pto.ClampedParameterOptimizer,
              lambda ps, **kw: pto.ClampedParameterOptimizer(ps, clamp_min=-0.8, clamp_max=0.6, **kw), in_set=_box),
    ShimEntry("TopQGradientOptimizer", pto.TopQGradientOptimizer,
              lambda ps, **kw: pto.TopQGradientOptimizer(ps, q=0.5, **kw)),
    ShimEntry("TopQGradientOptimizer (dq>0)", pto.TopQGradientOptimizer,
              lambda ps, **kw: pto.TopQGradientOptimizer(ps, q=0.5, dq=0.3, generator=torch.Generator().manual_seed(0), **kw)),
    ShimEntry("SignedGradientOptim", pto.SignedGradientOptim, lambda ps, **kw: pto.SignedGradientOptim(ps, **kw)),
    ShimEntry("L1NormedGradientOptim", pto.L1NormedGradientOptim, lambda ps, **kw: pto.L1NormedGradientOptim(ps, **kw)),
    ShimEntry("L2NormedGradientOptim", pto.L2NormedGradientOptim, lambda ps, **kw: pto.L2NormedGradientOptim(ps, **kw)),
    ShimEntry("L1qNormedGradientOptim", pto.L1qNormedGradientOptim,
              lambda ps, **kw: pto.L1qNormedGradientOptim(ps, q=0.5, **kw)),
    ShimEntry("L1qNormedGradientOptim (dq>0)", pto.L1qNormedGradientOptim,
              lambda ps, **kw: pto.L1qNormedGradientOptim(ps, q=0.5, dq=0.3, generator=torch.Generator().manual_seed(1), **kw)),
    ShimEntry("L2ProjectedOptim", pto.L2ProjectedOptim,
              lambda ps, **kw: pto.L2ProjectedOptim(ps, epsilon=0.5, **kw), in_set=_l2_ball),
    ShimEntry("LinfProjectedOptim", pto.LinfProjectedOptim,
              lambda ps, **kw: pto.LinfProjectedOptim(ps, epsilon=0.05, **kw), in_set=_linf_ball),
    ShimEntry("FrankWolfe", pto.FrankWolfe, lambda ps, **kw: pto.FrankWolfe(ps, lmo_scaling_factor=0.5, **kw),
              inner_kwargs=False, takes_param_ndim=False),
    ShimEntry("L1FrankWolfe", pto.L1FrankWolfe, lambda ps, **kw: pto.L1FrankWolfe(ps, epsilon=0.5, **kw),
              inner_kwargs=False, in_set=_fw_ball(1.0)),
    ShimEntry("L1qFrankWolfe", pto.L1qFrankWolfe, lambda ps, **kw: pto.L1qFrankWolfe(ps, q=0.5, epsilon=0.5, **kw),
              inner_kwargs=False, in_set=_fw_ball(1.0)),
    ShimEntry("L2FrankWolfe", pto.L2FrankWolfe, lambda ps, **kw: pto.L2FrankWolfe(ps, epsilon=0.5, **kw),
              inner_kwargs=False, in_set=_fw_ball(2.0)),
    ShimEntry("LinfFrankWolfe", pto.LinfFrankWolfe, lambda ps, **kw: pto.LinfFrankWolfe(ps, epsilon=0.5, **kw),
              inner_kwargs=False, in_set=_fw_ball(float("inf"))),
    ShimEntry(
        "GradientTransformationOptimizer",
        pto.GradientTransformationOptimizer,
        lambda ps, param_ndim=-1, **kw: pto.GradientTransformationOptimizer(
            ps,
            ptx.chain(ptx.normalize(2, param_ndim=param_ndim), ptx.sgd(0.1, momentum=0.5)),
            projection=partial(ptx.project_l2_ball, epsilon=0.5, param_ndim=param_ndim),
            defaults={"param_ndim": param_ndim},  # (read by in_set: the datum the projection sees)
            **kw,
        ),
        inner_kwargs=False,
        in_set=lambda batch, group, slack: _l2_ball(batch, {"epsilon": 0.5}, slack),
    ),
]


def starting_point(entry: ShimEntry, shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0, **_: Any) -> torch.Tensor:
    """Parameters inside the entry's set (small), so that a Frank-Wolfe iterate stays in its ball."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator, dtype=torch.float64, device="cpu").to(DEVICE) * 0.002 - 0.001).to(dtype)
