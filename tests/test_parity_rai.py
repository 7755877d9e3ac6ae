"""Parity with rai-toolbox 0.2.1 on random inputs.

Each rai optimizer runs with ``InnerOpt=SGD`` (or its own ``FrankWolfe``) on a
parameter whose ``.grad`` we set; after ``step()`` rai has written the
transformed gradient into ``p.grad``. The same maths as a paramtx chain must
give that gradient and the same parameter, for every ``param_ndim`` that fits,
float32 and float64, ``dq = 0``, over 3 steps (so Frank-Wolfe's schedule moves).

Tolerances: ``assert_close``'s defaults (float32 rtol 1.3e-6, float64 1e-7),
which cover the different operation orders (``torch.norm`` vs
``linalg.vector_norm``, in-place ``p *= 1 - a; p += b`` vs ``p + (new - p)``),
except where rai's maths differs on purpose: see ``test_l2_projected``.
"""

from __future__ import annotations

import pytest
import torch

rai = pytest.importorskip("rai_toolbox.optim")


import paramtx as ptx
from paramtx._lift.param_ndim import batch_shape
from ptx_testing import fitting_param_ndims, randn

pytestmark = pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")

LR = 0.1
EPSILON = 0.5
STEPS = 3
SHAPES = [(4, 3, 2), (5,), ()]


def _rai_param_ndims(shape):
    # rai rejects |param_ndim| > ndim also for a scalar; paramtx treats a scalar as one datum always
    return fitting_param_ndims(len(shape)) if shape else [None, 0]


def _cases(names):
    for name in names:
        for shape in SHAPES:
            for param_ndim in _rai_param_ndims(shape):
                yield pytest.param(name, shape, param_ndim, id=f"{name}-{shape}-{param_ndim}")


def _run_rai(make, shape, dtype, seed=0):
    p = randn(shape, dtype, seed=seed, scale=0.4).requires_grad_(True)
    optimizer = make([p])
    grads, params = [], []
    for k in range(STEPS):
        p.grad = randn(shape, dtype, seed=100 + k)
        optimizer.step()
        grads.append(p.grad.detach().clone())
        params.append(p.detach().clone())
    return grads, params


def _run_ptx(direction_tx, step_tx, shape, dtype, seed=0):
    """``direction_tx`` maps the gradient to rai's ``p.grad``; ``step_tx`` turns it into the update."""
    p = randn(shape, dtype, seed=seed, scale=0.4)
    d_state, s_state = direction_tx.init(p), step_tx.init(p)
    grads, params = [], []
    for k in range(STEPS):
        g = randn(shape, dtype, seed=100 + k)
        direction, d_state = direction_tx.update(g, d_state, p)
        updates, s_state = step_tx.update(direction, s_state, p)
        p = ptx.apply_updates(p, updates)
        grads.append(direction)
        params.append(p)
    return grads, params


# name -> (rai optimizer factory, paramtx direction, paramtx step), each a function of param_ndim
GRADIENT_CASES = {
    "l1_normed": (
        lambda nd: lambda ps: rai.L1NormedGradientOptim(ps, lr=LR, param_ndim=nd),
        lambda nd: ptx.normalize(1, param_ndim=nd),
        lambda nd: ptx.sgd(LR),
    ),
    "l2_normed": (
        lambda nd: lambda ps: rai.L2NormedGradientOptim(ps, lr=LR, param_ndim=nd),
        lambda nd: ptx.normalize(2, param_ndim=nd),
        lambda nd: ptx.sgd(LR),
    ),
    "signed": (
        lambda nd: lambda ps: rai.SignedGradientOptim(ps, lr=LR, param_ndim=nd),
        lambda nd: ptx.sign(),
        lambda nd: ptx.sgd(LR),
    ),
    "top_q": (
        lambda nd: lambda ps: rai.TopQGradientOptimizer(ps, lr=LR, q=0.4, dq=0.0, param_ndim=nd),
        lambda nd: ptx.top_q(0.4, param_ndim=nd),
        lambda nd: ptx.sgd(LR),
    ),
    "l1q_normed": (
        lambda nd: lambda ps: rai.L1qNormedGradientOptim(ps, lr=LR, q=0.6, dq=0.0, param_ndim=nd),
        lambda nd: ptx.lmo_l1q(0.6, param_ndim=nd),
        lambda nd: ptx.sgd(LR),
    ),
    "clamped_gradient": (
        lambda nd: lambda ps: rai.ClampedGradientOptimizer(ps, lr=LR, clamp_min=-0.3, clamp_max=0.8, param_ndim=nd),
        lambda nd: ptx.clamp(-0.3, 0.8),
        lambda nd: ptx.sgd(LR),
    ),
    "clamped_parameter": (
        lambda nd: lambda ps: rai.ClampedParameterOptimizer(ps, lr=LR, clamp_min=-0.3, clamp_max=0.2, param_ndim=nd),
        lambda nd: ptx.identity(),
        lambda nd: ptx.chain(ptx.sgd(LR), ptx.projected(ptx.project_box, lower=-0.3, upper=0.2)),
    ),
    "linf_projected": (
        lambda nd: lambda ps: rai.LinfProjectedOptim(ps, lr=LR, epsilon=0.2, param_ndim=nd),
        lambda nd: ptx.sign(),
        lambda nd: ptx.chain(ptx.sgd(LR), ptx.projected(ptx.project_linf_ball, epsilon=0.2)),
    ),
}


def _frank_wolfe_case(rai_cls, lmo, **rai_extra):
    def make(schedule):
        lr = 2.0 if schedule else 0.3
        return (
            lambda nd: lambda ps: rai_cls(
                ps, epsilon=EPSILON, lr=lr, use_default_lr_schedule=schedule, param_ndim=nd, **rai_extra
            ),
            lmo,
            lambda nd: ptx.frank_wolfe(EPSILON, lr=lr, use_default_lr_schedule=schedule),
        )

    return make


FW_CASES = {}
for _name, _make in {
    "l1q_fw": _frank_wolfe_case(rai.L1qFrankWolfe, lambda nd: ptx.lmo_l1q(0.6, param_ndim=nd), q=0.6),
    "l2_fw": _frank_wolfe_case(rai.L2FrankWolfe, lambda nd: ptx.lmo_l2(param_ndim=nd)),
    "linf_fw": _frank_wolfe_case(rai.LinfFrankWolfe, lambda nd: ptx.lmo_linf()),
    "l1_fw": _frank_wolfe_case(rai.L1FrankWolfe, lambda nd: ptx.lmo_l1(param_ndim=nd)),
}.items():
    FW_CASES[f"{_name}_schedule"] = _make(True)
    FW_CASES[f"{_name}_fixed_lr"] = _make(False)

ALL_CASES = {**GRADIENT_CASES, **FW_CASES}


def _datum_ndim(shape, param_ndim) -> int:
    return len(batch_shape("test", torch.Size(shape), param_ndim)) - 1


def _compare(case, shape, param_ndim, dtype, param_tolerance=None):
    make_rai, direction, step = case
    rai_grads, rai_params = _run_rai(make_rai(param_ndim), shape, dtype)
    ptx_grads, ptx_params = _run_ptx(direction(param_ndim), step(param_ndim), shape, dtype)
    for k in range(STEPS):
        torch.testing.assert_close(ptx_grads[k], rai_grads[k], msg=lambda m: f"p.grad, step {k}: {m}")
        torch.testing.assert_close(
            ptx_params[k], rai_params[k], **(param_tolerance or {}), msg=lambda m: f"param, step {k}: {m}"
        )


def _l1_fw_is_broken_in_rai(name, shape, param_ndim) -> bool:
    # rai's L1FrankWolfe takes the argmax along dim 1 only: wrong for a datum of 2+ dims
    return name.startswith("l1_fw") and _datum_ndim(shape, param_ndim) >= 2


@pytest.mark.parametrize(
    "name, shape, param_ndim",
    [case for case in _cases(ALL_CASES) if not _l1_fw_is_broken_in_rai(*case.values)],
)
def test_matches_rai_toolbox(name, shape, param_ndim, dtype):
    _compare(ALL_CASES[name], shape, param_ndim, dtype)


L2_PROJECTED = (
    lambda nd: lambda ps: rai.L2ProjectedOptim(ps, lr=LR, epsilon=EPSILON, param_ndim=nd),
    lambda nd: ptx.normalize(2, param_ndim=nd),
    lambda nd: ptx.chain(ptx.sgd(LR), ptx.projected(ptx.project_l2_ball, epsilon=EPSILON, param_ndim=nd)),
)


@pytest.mark.parametrize("name, shape, param_ndim", list(_cases(["l2_projected"])))
def test_l2_projected_matches_rai_toolbox(name, shape, param_ndim, dtype):
    # rai's L2ProjectedOptim: normalize (L2), SGD, then ``renorm_``, which scales a
    # datum x of norm n > epsilon by epsilon / (n + 1e-7), not epsilon / n. The two
    # results differ by the vector epsilon x 1e-7 / (n (n + 1e-7)), of L2 norm
    # epsilon 1e-7 / (n + 1e-7) < 1e-7. Projections are 1-Lipschitz and the gradients
    # are given, so after k steps each datum is within k * 1e-7 (L2, hence per
    # element) of rai's: that bound is added to the default absolute tolerance.
    default_atol = {torch.float32: 1e-5, torch.float64: 1e-7}[dtype]
    default_rtol = {torch.float32: 1.3e-6, torch.float64: 1e-7}[dtype]
    _compare(L2_PROJECTED, shape, param_ndim, dtype, dict(rtol=default_rtol, atol=default_atol + STEPS * 1e-7))


@pytest.mark.parametrize(
    "shape, param_ndim",
    [((4, 3, 2), nd) for nd in (None, -1, 2, 3)] + [((2, 3, 4, 4), -1)],
    ids=str,
)
def test_l1_frank_wolfe_on_multi_dim_data_is_right_where_rai_toolbox_is_wrong(shape, param_ndim, dtype):
    # rai-toolbox 0.2.1 takes the argmax along one dim of the datum: with a datum of
    # 2+ dims it raises IndexError (param_ndim=-1 or 2 here) or writes several
    # non-zeros per datum (None, 3). paramtx takes the argmax over the whole datum.
    view = batch_shape("t", torch.Size(shape), param_ndim)
    p0 = randn(shape, dtype, seed=0, scale=0.4)
    g = randn(shape, dtype, seed=100)
    p = p0.clone().requires_grad_(True)
    optimizer = rai.L1FrankWolfe([p], epsilon=EPSILON, param_ndim=param_ndim)
    p.grad = g.clone()
    try:
        optimizer.step()
        rai_is_one_hot = bool(((p.grad.reshape(view[0], -1) != 0).sum(dim=1) == 1).all())
    except IndexError:
        rai_is_one_hot = False
    assert not rai_is_one_hot  # documents rai's bug; paramtx must not copy it

    # the oracle: per datum, one non-zero, at the flat argmax of |g|, with g's sign
    rows = g.reshape(view[0], -1)
    index = rows.abs().argmax(dim=1)
    expected = torch.zeros_like(rows)
    expected[torch.arange(view[0]), index] = rows[torch.arange(view[0]), index].sign()
    expected = expected.reshape(shape)

    tx = ptx.chain(ptx.lmo_l1(param_ndim=param_ndim), ptx.frank_wolfe(EPSILON))
    direction = ptx.lmo_l1(param_ndim=param_ndim).update(g, ptx.EmptyState())[0]
    torch.testing.assert_close(direction, expected, rtol=0, atol=0)
    updates, _ = tx.update(g, tx.init(p0), p0)
    # alpha_0 = 2 / 2 = 1: the first iterate is the vertex -epsilon * s
    torch.testing.assert_close(ptx.apply_updates(p0, updates), -EPSILON * expected)
