"""The numerics policy on the cases that once broke it: half precision, tiny and huge
magnitudes, ties, non-finite values, through the functional API and the shims alike."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import paramtx as ptx
import paramtx.optim as pto
from ptx_testing import DEVICE, randn

HALF = (torch.float16, torch.bfloat16)
ALL = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _unit_norm_rows(out: torch.Tensor, p: float) -> torch.Tensor:
    return torch.linalg.vector_norm(out.double().flatten(1), ord=p, dim=1)


# ----------------------------------------------------------------------------- normalize


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_data_of_small_norm_normalize_to_unit_norm(dtype, p):
    # A datum of norm 2e-5: float16's smallest normal is 6e-5, so no floor may be
    # raised to it; the norm accumulates in float32.
    g = torch.tensor([[1.2e-5, -1.6e-5], [3.0, 4.0]], dtype=dtype, device=DEVICE)
    for tx in (ptx.normalize(p), ptx.lmo_l2() if p == 2.0 else ptx.normalize(p)):
        out = tx.update(g, tx.init(None))[0]
        assert out.dtype == dtype
        torch.testing.assert_close(_unit_norm_rows(out, p), torch.ones(2, dtype=torch.float64, device=DEVICE), rtol=1e-2, atol=0)


@pytest.mark.parametrize("cls, p", [(pto.L1NormedGradientOptim, 1.0), (pto.L2NormedGradientOptim, 2.0), (pto.L2FrankWolfe, 2.0)])
@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_shims_normalize_small_gradients_to_unit_norm(cls, p, dtype):
    w = torch.nn.Parameter(torch.zeros(2, 2, dtype=dtype, device=DEVICE))
    w.grad = torch.tensor([[1.2e-5, -1.6e-5], [3.0, 4.0]], dtype=dtype, device=DEVICE)
    kwargs = dict(epsilon=1.0) if cls is pto.L2FrankWolfe else dict(lr=0.0)
    cls([w], **kwargs).step()
    torch.testing.assert_close(_unit_norm_rows(w.grad, p), torch.ones(2, dtype=torch.float64, device=DEVICE), rtol=1e-2, atol=0)


@pytest.mark.parametrize("magnitude", [1e-30, 1e-20, 2e19, 1e30, 3e38])
def test_float32_norms_neither_underflow_nor_overflow(magnitude):
    g = (randn((3, 100), seed=4) * 0.5).clamp(-1, 1) * magnitude
    for p in (1.0, 2.0, 3.0):
        out = ptx.normalize(p).update(g, ptx.EmptyState())[0]
        torch.testing.assert_close(_unit_norm_rows(out, p), torch.ones(3, dtype=torch.float64, device=DEVICE), rtol=1e-5, atol=0)
    # a ball of radius `magnitude` (each datum's norm is several times that): onto its sphere
    projected = ptx.project_l2_ball(g, epsilon=magnitude).double() / magnitude
    torch.testing.assert_close(_unit_norm_rows(projected, 2.0), torch.ones(3, dtype=torch.float64, device=DEVICE), rtol=1e-5, atol=0)


# ----------------------------------------------------------------------------- the L1 ball


def _l1_excess(out: torch.Tensor, epsilon: float) -> float:
    """How far outside the ball, relative to its radius (<= 0 inside)."""
    return float(out.double().abs().flatten(1).sum(1).max()) / epsilon - 1.0


@pytest.mark.parametrize("dtype", HALF)
def test_l1_projection_in_half_precision_lands_in_the_ball(dtype):
    # once up to 1920x outside: the sort and sums ran in the half dtype
    for seed in range(5):
        x = randn((8, 3 * 32 * 32), torch.float32, seed=seed).to(dtype)
        for epsilon in (1.0, 10.0, 0.01):
            assert _l1_excess(ptx.project_l1_ball(x, epsilon), epsilon) <= 1e-2


@pytest.mark.parametrize("epsilon", [1e-3, 1e-6, 1e-9, 1e-20])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l1_projection_of_tied_magnitudes_with_a_tiny_radius_lands_in_the_ball(dtype, epsilon):
    # once 187x outside: u_j * j > cumsum_j - epsilon failed by rounding for ties
    x = torch.full((4, 1000), 0.1, dtype=dtype, device=DEVICE) * torch.tensor([1.0, -1.0], device=DEVICE).repeat(500)
    out = ptx.project_l1_ball(x, epsilon)
    assert _l1_excess(out, epsilon) <= 1e-6
    # ... and is the exact projection: every element shrinks by the same amount, to epsilon / D
    if epsilon / 1000 > 0.1 * torch.finfo(dtype).eps:
        torch.testing.assert_close(out.abs(), torch.full_like(out, epsilon / 1000), rtol=1e-5, atol=0)


@given(
    seed=st.integers(0, 2**20),
    log_epsilon=st.floats(-12, 4),
    log_scale=st.floats(-20, 20),
    ties=st.booleans(),
    dtype=st.sampled_from(ALL),
)
def test_l1_projection_lands_in_the_ball_whatever_the_radius_scale_and_ties(seed, log_epsilon, log_scale, ties, dtype):
    x = randn((3, 64), seed=seed) * 10.0**log_scale
    if ties:
        x = x.abs().amax(1, keepdim=True) * torch.sign(x)
    x = x.to(dtype)
    epsilon = 10.0**log_epsilon * 10.0**log_scale
    if not torch.isfinite(x).all() or (x == 0).all():
        return  # the dtype cannot hold this scale
    tolerance = 1e-2 if dtype in HALF else 1e-6
    assert _l1_excess(ptx.project_l1_ball(x, epsilon), epsilon) <= tolerance


# ----------------------------------------------------------------------------- non-finite values


NAN_TRANSFORMS = {
    "sign": lambda: ptx.sign(),
    "lmo_linf": lambda: ptx.lmo_linf(),
    "lmo_l1": lambda: ptx.lmo_l1(),
    "lmo_l1q": lambda: ptx.lmo_l1q(0.5),
    "lmo_l1q_dq": lambda: ptx.lmo_l1q(0.5, dq=0.4),
    "top_q": lambda: ptx.top_q(0.9),
    "normalize": lambda: ptx.normalize(2),
    "clamp": lambda: ptx.clamp(-1.0, 1.0),
}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", NAN_TRANSFORMS)
def test_a_non_finite_gradient_gives_nan_never_a_finite_step(name, bad):
    g = randn((2, 6), seed=1)
    g[0, 3] = bad
    tx = NAN_TRANSFORMS[name]()
    out = tx.update(g, tx.init(None))[0]
    elementwise = name in ("sign", "lmo_linf", "clamp")
    assert bool(out[0, 3].isnan()) and (elementwise or bool(out[0].isnan().all()))
    assert bool(torch.isfinite(out[1]).all())  # the other datum is untouched


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: pto.SignedGradientOptim(ps, lr=0.1),
        lambda ps: pto.LinfFrankWolfe(ps, epsilon=1.0),
        lambda ps: pto.L1FrankWolfe(ps, epsilon=1.0),
        lambda ps: pto.L1qFrankWolfe(ps, q=0.5, epsilon=1.0),
        lambda ps: pto.L1qNormedGradientOptim(ps, q=0.5, lr=0.1),
        lambda ps: pto.TopQGradientOptimizer(ps, q=0.9, lr=0.1),
    ],
    ids=["SignedGradientOptim", "LinfFrankWolfe", "L1FrankWolfe", "L1qFrankWolfe", "L1qNormedGradientOptim", "TopQGradientOptimizer"],
)
def test_a_nan_gradient_never_gives_the_shims_a_finite_step(make):
    w = torch.nn.Parameter(torch.zeros(2, 6, device=DEVICE))
    w.grad = randn((2, 6), seed=2)
    w.grad[0, 3] = math.nan
    make([w]).step()
    assert bool(w[0].isnan().any()) and bool(torch.isfinite(w[1]).all())


def test_a_nan_theta_gives_perturbed_argmax_nan_not_a_confident_one_hot():
    theta = torch.tensor([[0.5, math.nan, -1.0], [0.1, 2.0, 0.3]], device=DEVICE, requires_grad=True)
    out = ptx.perturbed_argmax(theta, num_samples=200, sigma=0.5, seed=0)
    assert bool(out[0].isnan().all()) and bool(torch.isfinite(out[1]).all())
    out[:, 1].sum().backward()
    assert bool(theta.grad[0].isnan().all()) and bool(torch.isfinite(theta.grad[1]).all())
