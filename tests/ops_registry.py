"""Every per-datum and per-element op of paramtx, with how to reach it on each path and its oracle.

The conformance battery (``test_conformance.py``) drives each entry through
every path (pure, in place, through its shim, the vmap reference, DTensor,
compiled), dtype, layout and value class; ``test_registry_covers_every_op``
fails when an op of the library is missing here.

Each oracle computes the expected result of ONE datum in float64 from the
input as the dtype stores it, by the definition of the op (a direct formula,
exact rational arithmetic, or a property check where ties leave a choice):
independent of how paramtx computes it.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from functools import partial
from typing import Callable, Optional

import torch

import paramtx as ptx
import paramtx.optim as pto
from paramtx._lift.ops import DatumOp, NormOp
from paramtx._transforms.elementwise import ADD, CLAMP, SCALE, SIGN
from paramtx._transforms.frank_wolfe import FW_STEP
from paramtx._transforms.lmo import L1_LMO, L1Q_LMO
from paramtx._transforms.normalize import NORMALIZE
from paramtx._transforms.projections import L1_BALL, L2_BALL
from paramtx._transforms.top_q import TOP_Q
from paramtx._transforms.ball_box import L1_BALL_BOX, L2_BALL_BOX, LINF_BALL_BOX
from paramtx._transforms.lp_ball import LP_BALL
from paramtx._transforms.simplex import SIMPLEX

TINY = torch.finfo(torch.float32).tiny
Q = 0.5  # top-q: keep round(0.5 * D)
RADIUS = 1.0  # the balls
CLAMP_BOUNDS = (-0.4, 0.3)
FW = dict(epsilon=0.7, alpha=0.5)  # a Frank-Wolfe step with lr=0.5 and no schedule


@dataclasses.dataclass(frozen=True)
class OpEntry:
    """One op of the library.

    Attributes:
        name: the test id.
        op: the op object the lift runs (what the in-place path applies).
        options: ``options(x_batch)``: the op's options for a tensor (e.g. ``keep``).
        pure: ``pure(x, param_ndim, other)``: the public functional API's result.
        shim: ``shim(x, param_ndim, other)``: the tensor the op writes through its
            torch.optim shim (the gradient after a step, or the parameter), or None.
        oracle: ``oracle(row, other_row)``: the expected datum, float64 (``row`` is float64).
        nan_policy: ``"datum"`` (a non-finite element makes its datum NaN),
            ``"element"`` (makes its element NaN), ``"ieee"`` (non-finite stays non-finite).
        selects: ties leave a choice (top-q): the result is checked by :func:`check_selection`.
        two_inputs: the op takes a second tensor (a direction).
        exact_pure: the pure path runs the same kernels as the in-place one (bit-equal).
    """

    name: str
    op: object
    options: Callable[[torch.Tensor], dict]
    pure: Callable[[torch.Tensor, Optional[int], Optional[torch.Tensor]], torch.Tensor]
    shim: Optional[Callable[[torch.Tensor, Optional[int], Optional[torch.Tensor]], torch.Tensor]]
    oracle: Callable[..., torch.Tensor]
    nan_policy: str = "datum"
    selects: bool = False
    two_inputs: bool = False
    exact_pure: bool = True

    def __repr__(self) -> str:
        return self.name


# ----------------------------------------------------------------------------- paths


def _transform_pure(make: Callable[[Optional[int]], ptx.GradientTransformation]):
    def pure(x, param_ndim, other):
        tx = make(param_ndim)
        return tx.update(x, tx.init(None))[0]

    return pure


def _grad_after_step(make: Callable[..., torch.optim.Optimizer]):
    """The gradient a shim's pre-step transform writes (the inner step has ``lr=0``)."""

    def shim(x, param_ndim, other):
        param = torch.nn.Parameter(torch.zeros_like(x))
        param.grad = x.clone()  # keeps x's layout
        make([param], param_ndim).step()
        return param.grad

    return shim


def _param_after_step(make: Callable[..., torch.optim.Optimizer]):
    """The parameter a shim's post-step transform writes (with a zero gradient and ``lr=0``)."""

    def shim(x, param_ndim, other):
        param = torch.nn.Parameter(x.clone())
        param.grad = torch.zeros_like(x)
        make([param], param_ndim).step()
        return param.detach()

    return shim


def _lp_shim(p: float):
    if p == 1.0:
        return lambda ps, nd: pto.L1NormedGradientOptim(ps, param_ndim=nd, lr=0.0)
    if p == 2.0:
        return lambda ps, nd: pto.L2NormedGradientOptim(ps, param_ndim=nd, lr=0.0)

    class LpNormed(pto.lp_space._LpNormOptimizer):  # rai-toolbox's documented way to add a norm
        _p = p

    return lambda ps, nd: LpNormed(ps, param_ndim=nd, lr=0.0)


def _frank_wolfe_pure(x, param_ndim, direction):
    tx = ptx.frank_wolfe(FW["epsilon"], lr=FW["alpha"], use_default_lr_schedule=False)
    update, _ = tx.update(direction, tx.init(x), x)
    return ptx.apply_updates(x, update)


def _frank_wolfe_shim(x, param_ndim, direction):
    param = torch.nn.Parameter(x.clone())
    param.grad = direction.clone()
    pto.FrankWolfe([param], lr=FW["alpha"], lmo_scaling_factor=FW["epsilon"], use_default_lr_schedule=False).step()
    return param.detach()


# ----------------------------------------------------------------------------- oracles (one datum, float64)


def _norm(row: torch.Tensor, p: float) -> float:
    """The Lp norm of a finite float64 datum, computed as ``m * ||row / m||_p`` with
    ``m`` its largest magnitude, so that no power under- or overflows."""
    largest = float(row.abs().max()) if row.numel() else 0.0
    if largest == 0.0 or p == math.inf:
        return largest
    return largest * float(((row.abs() / largest) ** p).sum() ** (1.0 / p))


def _normalize_oracle(p: float, row: torch.Tensor, other=None) -> torch.Tensor:
    return row / max(_norm(row, p), TINY)


def _l2_ball_oracle(row: torch.Tensor, other=None) -> torch.Tensor:
    norm = _norm(row, 2.0)
    return row if norm <= RADIUS else row * (RADIUS / norm)


def _l1_ball_oracle(row: torch.Tensor, other=None) -> torch.Tensor:
    """Exact rational arithmetic: the soft threshold whose result has L1 norm ``RADIUS``."""
    values = [Fraction(v) for v in row.tolist()]
    magnitudes = sorted((abs(v) for v in values), reverse=True)
    if sum(magnitudes) <= RADIUS:
        return row.clone()
    total, theta = Fraction(0), Fraction(0)
    for j, u in enumerate(magnitudes, start=1):
        total += u
        candidate = (total - Fraction(RADIUS)) / j
        if u > candidate:
            theta = candidate
    return torch.tensor(
        [float(max(abs(v) - theta, 0) * (1 if v > 0 else -1)) for v in values], dtype=torch.float64
    )


def _l1_lmo_oracle(row: torch.Tensor, other=None) -> torch.Tensor:
    out = torch.zeros_like(row)
    if row.abs().max() > 0:
        index = int(row.abs().argmax())  # the first largest magnitude
        out[index] = math.copysign(1.0, float(row[index]))
    return out


def _sign_oracle(row: torch.Tensor, other=None) -> torch.Tensor:
    return torch.sign(row)


def _clamp_oracle(low, high, row: torch.Tensor, other=None) -> torch.Tensor:
    return row.clamp(low, high)


def _fw_oracle(row: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    return (1 - FW["alpha"]) * row - FW["alpha"] * FW["epsilon"] * direction


def kept(d: int) -> int:
    return round((1 - Q) * d)


def check_selection(name: str, out: torch.Tensor, row: torch.Tensor, dtype: torch.dtype) -> None:
    """Top-q (``name == "top_q"``) or the L1q LMO on one datum: the ``keep`` largest
    magnitudes (any of the tied ones), kept (or their signs, over their count, rounded
    to ``dtype``), the rest 0. ``out`` and ``row`` are float64."""
    keep = kept(row.numel())
    magnitudes = row.abs()
    if keep == 0:
        assert (out == 0).all()
        return
    threshold = magnitudes.sort(descending=True).values[keep - 1]
    above, at = magnitudes > threshold, magnitudes == threshold
    target = row if name == "top_q" else torch.sign(row)
    chosen = (out != 0) | (above & (target == 0))
    assert (out[~chosen] == 0).all(), (out, row)
    assert bool(chosen[above].all()), "a magnitude above the threshold was dropped"
    assert not bool(chosen[magnitudes < threshold].any()), "a magnitude below the threshold was kept"
    if threshold > 0:
        assert int((chosen & at).sum()) == keep - int(above.sum()), "not exactly keep elements kept"
    if name == "top_q":
        assert torch.equal(out[chosen], row[chosen])
    else:
        count = int((chosen & (row != 0)).sum())
        want = (torch.sign(row[chosen]) / max(count, 1)).to(dtype).double()
        torch.testing.assert_close(out[chosen], want, rtol=0, atol=0)


# ----------------------------------------------------------------------------- the registry


def _keep_options(batch: torch.Tensor) -> dict:
    d = math.prod(batch.shape[1:]) if batch.dim() > 1 else 1
    return dict(keep=kept(d), bound=kept(d))


ENTRIES: list[OpEntry] = []
for _p in (1.0, 2.0, math.inf, 3.0):
    ENTRIES.append(
        OpEntry(
            f"normalize_p{_p:g}",
            NORMALIZE,
            lambda batch, p=_p: dict(p=p, eps=TINY),
            _transform_pure(lambda nd, p=_p: ptx.normalize(p, param_ndim=nd)),
            _grad_after_step(_lp_shim(_p)),
            partial(_normalize_oracle, _p),
        )
    )
ENTRIES += [
    OpEntry(
        "lmo_l2",
        NORMALIZE,
        lambda batch: dict(p=2.0, eps=TINY),
        _transform_pure(lambda nd: ptx.lmo_l2(param_ndim=nd)),
        _grad_after_step(lambda ps, nd: pto.L2FrankWolfe(ps, epsilon=1.0, param_ndim=nd, lr=0.0)),
        partial(_normalize_oracle, 2.0),
    ),
    OpEntry(
        "top_q",
        TOP_Q,
        _keep_options,
        _transform_pure(lambda nd: ptx.top_q(Q, param_ndim=nd)),
        _grad_after_step(lambda ps, nd: pto.TopQGradientOptimizer(ps, q=Q, param_ndim=nd, lr=0.0)),
        lambda row, other=None: None,
        selects=True,
    ),
    OpEntry(
        "lmo_l1q",
        L1Q_LMO,
        lambda batch: dict(_keep_options(batch), eps=TINY),
        _transform_pure(lambda nd: ptx.lmo_l1q(Q, param_ndim=nd)),
        _grad_after_step(lambda ps, nd: pto.L1qNormedGradientOptim(ps, q=Q, param_ndim=nd, lr=0.0)),
        lambda row, other=None: None,
        selects=True,
    ),
    OpEntry(
        "lmo_l1",
        L1_LMO,
        lambda batch: {},
        _transform_pure(lambda nd: ptx.lmo_l1(param_ndim=nd)),
        _grad_after_step(lambda ps, nd: pto.L1FrankWolfe(ps, epsilon=1.0, param_ndim=nd, lr=0.0)),
        _l1_lmo_oracle,
    ),
    OpEntry(
        "project_l2_ball",
        L2_BALL,
        lambda batch: dict(epsilon=RADIUS),
        lambda x, nd, other: ptx.project_l2_ball(x, RADIUS, param_ndim=nd),
        _param_after_step(lambda ps, nd: pto.L2ProjectedOptim(ps, epsilon=RADIUS, param_ndim=nd, lr=0.0)),
        _l2_ball_oracle,
    ),
    OpEntry(
        "project_l1_ball",
        L1_BALL,
        lambda batch: dict(epsilon=RADIUS),
        lambda x, nd, other: ptx.project_l1_ball(x, RADIUS, param_ndim=nd),
        None,  # no rai-toolbox class projects onto the L1 ball: in place through the lift only
        _l1_ball_oracle,
    ),
    OpEntry(
        "sign",
        SIGN,
        lambda batch: {},
        _transform_pure(lambda nd: ptx.sign()),
        _grad_after_step(lambda ps, nd: pto.SignedGradientOptim(ps, param_ndim=nd, lr=0.0)),
        _sign_oracle,
        nan_policy="element",
    ),
    OpEntry(
        "lmo_linf",
        SIGN,
        lambda batch: {},
        _transform_pure(lambda nd: ptx.lmo_linf()),
        _grad_after_step(lambda ps, nd: pto.LinfFrankWolfe(ps, epsilon=1.0, param_ndim=nd, lr=0.0)),
        _sign_oracle,
        nan_policy="element",
    ),
    OpEntry(
        "clamp",
        CLAMP,
        lambda batch: dict(low=CLAMP_BOUNDS[0], high=CLAMP_BOUNDS[1]),
        _transform_pure(lambda nd: ptx.clamp(*CLAMP_BOUNDS)),
        _grad_after_step(
            lambda ps, nd: pto.ClampedGradientOptimizer(ps, clamp_min=CLAMP_BOUNDS[0], clamp_max=CLAMP_BOUNDS[1], lr=0.0)
        ),
        partial(_clamp_oracle, *CLAMP_BOUNDS),
        nan_policy="element",
    ),
    OpEntry(
        "project_box",
        CLAMP,
        lambda batch: dict(low=CLAMP_BOUNDS[0], high=CLAMP_BOUNDS[1]),
        lambda x, nd, other: ptx.project_box(x, *CLAMP_BOUNDS),
        _param_after_step(
            lambda ps, nd: pto.ClampedParameterOptimizer(ps, clamp_min=CLAMP_BOUNDS[0], clamp_max=CLAMP_BOUNDS[1], lr=0.0)
        ),
        partial(_clamp_oracle, *CLAMP_BOUNDS),
        nan_policy="element",
    ),
    OpEntry(
        "project_linf_ball",
        CLAMP,
        lambda batch: dict(low=-RADIUS / 2, high=RADIUS / 2),
        lambda x, nd, other: ptx.project_linf_ball(x, RADIUS / 2),
        _param_after_step(lambda ps, nd: pto.LinfProjectedOptim(ps, epsilon=RADIUS / 2, lr=0.0)),
        partial(_clamp_oracle, -RADIUS / 2, RADIUS / 2),
        nan_policy="element",
    ),
    OpEntry(
        "scale",
        SCALE,
        lambda batch: dict(factor=-0.5),
        _transform_pure(lambda nd: ptx.scale(-0.5)),
        _grad_after_step(lambda ps, nd: pto.ParamTransformingOptimizer(ps, grad_scale=-0.5, lr=0.0)),
        lambda row, other=None: row * -0.5,
        nan_policy="ieee",
    ),
    OpEntry(
        "add",
        ADD,
        lambda batch: dict(bias=0.25),
        _transform_pure(lambda nd: ptx.add(0.25)),
        _grad_after_step(lambda ps, nd: pto.ParamTransformingOptimizer(ps, grad_bias=0.25, lr=0.0)),
        lambda row, other=None: row + 0.25,
        nan_policy="ieee",
    ),
    OpEntry(
        "frank_wolfe_step",
        FW_STEP,
        lambda batch: dict(alpha=FW["alpha"], epsilon=FW["epsilon"]),
        _frank_wolfe_pure,
        _frank_wolfe_shim,
        _fw_oracle,
        nan_policy="ieee",
        two_inputs=True,
        exact_pure=False,  # the transform returns p' - p, which apply_updates adds back
    ),
]

# ----------------------------------------------------------------------------- ball ∩ box, simplex, Lp ball

BOX = (-0.25, 0.375)  # exact in every dtype: the ops round bounds to the data's dtype
LINF_BOX = (-0.75, 0.375)  # with radius RADIUS / 2: the intersection is [-0.5, 0.375]
LP_ORDER = 3.0  # g + c g^2 = |x| has a closed form: an oracle independent of the op's Newton steps


def _bisect(predicate: Callable[[float], bool], low: float, high: float, steps: int = 200) -> float:
    """The boundary in ``[low, high]`` of a monotone predicate, true at ``low``: the last true point."""
    for _ in range(steps):
        mid = (low + high) / 2
        low, high = (mid, high) if predicate(mid) else (low, mid)
    return low


def _l2_ball_box_oracle(row: torch.Tensor, other=None) -> torch.Tensor:
    """``clamp(t x, lower, upper)``, the largest ``t`` in ``[0, 1]`` in the ball, by plain bisection."""
    def point(t: float) -> torch.Tensor:
        return (row * t).clamp(*BOX)

    t = _bisect(lambda t: _norm(point(t), 2.0) <= RADIUS, 0.0, 1.0)
    return point(1.0) if _norm(point(1.0), 2.0) <= RADIUS else point(t)


def _l1_ball_box_oracle(row: torch.Tensor, other=None) -> torch.Tensor:
    """``clamp(soft(x, theta), lower, upper)``, the smallest ``theta >= 0`` in the ball, by plain bisection."""
    def point(theta: float) -> torch.Tensor:
        return (torch.sign(row) * (row.abs() - theta).clamp(min=0)).clamp(*BOX)

    if float(point(0.0).abs().sum()) <= RADIUS:
        return point(0.0)
    top = float(row.abs().max())
    theta = top - _bisect(lambda s: float(point(top - s).abs().sum()) <= RADIUS, 0.0, top)  # (in s = top - theta)
    return point(theta)


def _simplex_oracle(row: torch.Tensor, other=None) -> torch.Tensor:
    """Held et al.: sort, and the largest support whose threshold keeps its last element positive."""
    values = [Fraction(v) for v in row.tolist()]
    ordered = sorted(values, reverse=True)
    total, tau = Fraction(0), None
    for j, u in enumerate(ordered, start=1):
        total += u
        candidate = (total - 1) / j
        if u > candidate:
            tau = candidate
    return torch.tensor([float(max(v - tau, 0)) for v in values], dtype=torch.float64)


def _lp_ball_oracle(row: torch.Tensor, other=None) -> torch.Tensor:
    """p = 3: ``g = (sqrt(1 + 4 c a) - 1) / (2 c)``, ``c`` bisected (in log space) on ``sum g^3 = 1``."""
    if _norm(row, LP_ORDER) <= RADIUS:
        return row.clone()
    a = row.abs()

    def magnitudes(log_c: float) -> torch.Tensor:
        c = math.exp(log_c)
        # (1 + 4ca)^(1/2) - 1 written without cancellation
        return 2 * a / (torch.sqrt(1 + 4 * c * a) + 1)

    log_c = _bisect(lambda s: float((magnitudes(s) ** 3).sum()) > RADIUS, -700.0, 700.0)
    return torch.sign(row) * magnitudes(log_c)


def _linf_ball_box_oracle(row: torch.Tensor, other=None) -> torch.Tensor:
    return row.clamp(max(LINF_BOX[0], -RADIUS / 2), min(LINF_BOX[1], RADIUS / 2))


ENTRIES += [
    OpEntry(
        "project_l2_ball_box",
        L2_BALL_BOX,
        lambda batch: dict(epsilon=RADIUS, lower=BOX[0], upper=BOX[1]),
        lambda x, nd, other: ptx.project_l2_ball(x, RADIUS, param_ndim=nd, lower=BOX[0], upper=BOX[1]),
        None,  # no rai-toolbox class
        _l2_ball_box_oracle,
    ),
    OpEntry(
        "project_l1_ball_box",
        L1_BALL_BOX,
        lambda batch: dict(epsilon=RADIUS, lower=BOX[0], upper=BOX[1]),
        lambda x, nd, other: ptx.project_l1_ball(x, RADIUS, param_ndim=nd, lower=BOX[0], upper=BOX[1]),
        None,
        _l1_ball_box_oracle,
    ),
    OpEntry(
        "project_linf_ball_box",
        LINF_BALL_BOX,
        lambda batch: dict(epsilon=RADIUS / 2, lower=LINF_BOX[0], upper=LINF_BOX[1]),
        lambda x, nd, other: ptx.project_linf_ball(x, RADIUS / 2, lower=LINF_BOX[0], upper=LINF_BOX[1]),
        None,
        _linf_ball_box_oracle,
        nan_policy="element",
    ),
    OpEntry(
        "project_simplex",
        SIMPLEX,
        lambda batch: dict(scale=1.0),
        lambda x, nd, other: ptx.project_simplex(x, param_ndim=nd),
        None,
        _simplex_oracle,
    ),
    OpEntry(
        "project_lp_ball",
        LP_BALL,
        lambda batch: dict(p=LP_ORDER, epsilon=RADIUS),
        lambda x, nd, other: ptx.project_lp_ball(x, LP_ORDER, RADIUS, param_ndim=nd),
        None,
        _lp_ball_oracle,
    ),
]

OPS = (ADD, CLAMP, SCALE, SIGN, FW_STEP, L1_LMO, L1Q_LMO, NORMALIZE, L1_BALL, L2_BALL, TOP_Q)
OPS += (L2_BALL_BOX, L1_BALL_BOX, LINF_BALL_BOX, SIMPLEX, LP_BALL)
assert all(isinstance(op, (DatumOp, NormOp)) for op in OPS)
