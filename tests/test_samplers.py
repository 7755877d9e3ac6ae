"""Uniform samplers of Lp balls, pure (``sample_l*_ball``) and rai-toolbox's in-place names.

Uniformity is checked with Kolmogorov-Smirnov tests at D = 3072 with fixed
generators (deterministic; each asserts p > 0.01): for x uniform in a
D-dimensional ball of radius epsilon, ``(||x|| / epsilon) ** D`` is uniform on
[0, 1] (L2, L1); for the L-infinity ball each coordinate is uniform on
[-epsilon, epsilon].
"""

from __future__ import annotations

import inspect
import math

import pytest
import rai_toolbox.perturbations as rai
import torch

import paramtx as ptx
import paramtx.perturbations as ptp

D = 3072


def ks_statistic(samples: torch.Tensor, cdf) -> float:
    """sup |F_n - F| of a one-sample Kolmogorov-Smirnov test."""
    ordered = samples.double().sort().values
    n = ordered.numel()
    theory = cdf(ordered)
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(ranks / n - theory, theory - (ranks - 1) / n).max())


def ks_two_sample_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """sup |F_a - F_b| of a two-sample Kolmogorov-Smirnov test."""
    both = torch.cat([a, b]).double().sort().values
    fa = torch.searchsorted(a.double().sort().values, both, right=True) / a.numel()
    fb = torch.searchsorted(b.double().sort().values, both, right=True) / b.numel()
    return float((fa - fb).abs().max())


def kolmogorov_p_value(statistic: float, n: float) -> float:
    """The asymptotic p-value ``P(K > (sqrt(n) + 0.12 + 0.11 / sqrt(n)) D)`` (Stephens' correction),
    ``K`` Kolmogorov's distribution: ``2 sum_k (-1)^(k-1) exp(-2 k^2 t^2)``."""
    t = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * statistic
    if t < 0.2:
        return 1.0
    return min(1.0, max(0.0, 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * t * t) for k in range(1, 101))))


def test_ks_helpers_reject_a_wrong_law_and_accept_the_right_one():
    # the test of the tests: the helpers can fail
    g = torch.Generator().manual_seed(1)
    u = torch.rand(2000, generator=g, dtype=torch.float64)
    assert kolmogorov_p_value(ks_statistic(u, lambda v: v), 2000) > 0.01
    assert kolmogorov_p_value(ks_statistic(u**1.3, lambda v: v), 2000) < 1e-3
    assert kolmogorov_p_value(ks_two_sample_statistic(u, u**1.3), 1000) < 1e-3


def _radius_law_p_value(x: torch.Tensor, p: float, epsilon: torch.Tensor) -> float:
    radius = torch.linalg.vector_norm(x.double().flatten(1), ord=p, dim=1) / epsilon.double()
    return kolmogorov_p_value(ks_statistic(radius ** x[0].numel(), lambda v: v), radius.numel())


@pytest.mark.parametrize("sampler, p", [(ptx.sample_l2_ball, 2.0), (ptx.sample_l1_ball, 1.0)], ids=["l2", "l1"])
def test_radius_law_is_r_to_the_d_at_d_3072(sampler, p):
    g = torch.Generator().manual_seed(2026)
    like = torch.empty(1000, 3, 32, 32, dtype=torch.float64)  # D = 3072 per datum
    epsilon = torch.linspace(0.1, 4.0, 1000, dtype=torch.float64)  # per-datum radii
    x = sampler(like, epsilon, generator=g)
    assert x.shape == like.shape and x.dtype == like.dtype
    assert _radius_law_p_value(x, p, epsilon) > 0.01


def test_linf_coordinates_are_uniform_at_d_3072():
    g = torch.Generator().manual_seed(2026)
    x = ptx.sample_linf_ball(torch.empty(8, D, dtype=torch.float64), 0.5, generator=g)
    assert float(x.abs().max()) <= 0.5
    values = x.flatten()[:: 7]  # (3511 coordinates: KS's resolution ~0.02)
    assert kolmogorov_p_value(ks_statistic(values, lambda v: (v + 0.5) / 1.0), values.numel()) > 0.01


@pytest.mark.parametrize("sampler, p", [(ptx.sample_l2_ball, 2.0), (ptx.sample_l1_ball, 1.0), (ptx.sample_linf_ball, math.inf)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_samples_lie_in_the_ball_in_every_dtype(sampler, p, dtype):
    like = torch.zeros(64, 30, dtype=dtype)
    radii = torch.logspace(-3, 3, 64, dtype=torch.float64)
    x = sampler(like, radii, generator=torch.Generator().manual_seed(0))
    assert x.dtype == dtype and x.shape == like.shape and torch.equal(like, torch.zeros_like(like))  # pure
    norms = torch.linalg.vector_norm(x.double(), ord=p, dim=1)
    # drawn in float32 (float64 for float64) and rounded once: a relative slack of a few ulps of the dtype
    assert bool((norms <= radii * (1 + 4 * torch.finfo(dtype).eps)).all())
    assert bool((norms > 0).all())


def test_samplers_follow_param_ndim_and_the_generator():
    like = torch.empty(2, 3, 4)
    a = ptx.sample_l2_ball(like, 1.0, param_ndim=None, generator=torch.Generator().manual_seed(5))
    b = ptx.sample_l2_ball(like, 1.0, param_ndim=None, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and float(a.norm()) <= 1.0
    rows = ptx.sample_l1_ball(like, torch.tensor([[0.1], [1.0]]).flatten(), param_ndim=-1)
    assert bool((rows.flatten(1).abs().sum(1) <= torch.tensor([0.1, 1.0]) * (1 + 1e-6)).all())
    # a radius that is not a positive number is not read on the host: that datum is NaN
    bad = ptx.sample_l2_ball(torch.empty(3, 4), torch.tensor([1.0, -1.0, float("nan")]))
    assert bool(bad[1:].isnan().all()) and not bool(bad[0].isnan().any())
    with pytest.raises(ValueError, match="sample_l2_ball: epsilon must be a number or a tensor broadcastable"):
        ptx.sample_l2_ball(like, torch.ones(3))
    with pytest.raises(ValueError, match="sample_linf_ball: epsilon must satisfy 0 < epsilon, got -1.0"):
        ptx.sample_linf_ball(like, -1.0)
    with pytest.raises(TypeError, match="sample_l1_ball: like must be a torch.Tensor"):
        ptx.sample_l1_ball([1.0], 1.0)


# ----------------------------------------------------------------------------- rai-toolbox's in-place names


NAMES = ["uniform_like_l1_n_ball_", "uniform_like_l2_n_ball_", "uniform_like_linf_n_ball_"]


@pytest.mark.parametrize("name", NAMES)
def test_in_place_names_have_rai_toolbox_signatures(name):
    ours, theirs = inspect.signature(getattr(ptp, name)), inspect.signature(getattr(rai, name))
    assert list(ours.parameters) == list(theirs.parameters)
    for key in ours.parameters:
        assert ours.parameters[key].default is theirs.parameters[key].default or (
            ours.parameters[key].default == theirs.parameters[key].default
        ), key


@pytest.mark.parametrize("name, p", list(zip(NAMES, [1.0, 2.0, math.inf])))
def test_in_place_names_overwrite_x_in_the_ball_like_rai_toolbox(name, p):
    x = torch.zeros(4, 6, dtype=torch.float64, requires_grad=True)
    before = x.data_ptr()
    assert getattr(ptp, name)(x, epsilon=2.0, generator=torch.Generator().manual_seed(0)) is None
    assert x.data_ptr() == before and x.dtype == torch.float64 and x.requires_grad and x.grad_fn is None
    assert bool((torch.linalg.vector_norm(x.detach(), ord=p, dim=1) <= 2.0).all()) and bool((x != 0).any())


@pytest.mark.parametrize("name, p", [(NAMES[0], 1.0), (NAMES[1], 2.0)])
def test_in_place_names_draw_the_same_distribution_as_rai_toolbox(name, p):
    # rai-toolbox draws other numbers (its L2 start takes D + 2 normals); the laws agree:
    # a two-sample KS test on the radius law at D = 3072
    radii = {}
    for who, fn in (("ours", getattr(ptp, name)), ("rai", getattr(rai, name))):
        x = torch.zeros(600, D, dtype=torch.float64)
        fn(x, epsilon=1.5, generator=torch.Generator().manual_seed(7))
        radii[who] = (torch.linalg.vector_norm(x, ord=p, dim=1) / 1.5) ** D
    assert kolmogorov_p_value(ks_two_sample_statistic(radii["ours"], radii["rai"]), 300) > 0.01
