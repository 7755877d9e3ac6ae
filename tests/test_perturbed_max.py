"""Tests for ``perturbed_max``: closed forms, the pathwise gradient, torch.func, errors.

Closed forms: with Gumbel noise, max_i(θ_i + σG_i) is Gumbel of location
σ logsumexp(θ/σ) and scale σ, so the perturbed max of the one-hot argmax is
σ logsumexp(θ/σ) + σγ with per-draw variance σ²π²/6, and its gradient
softmax(θ/σ) is a mean of Bernoulli indicators. With normal noise, the sign
solves max <x, y> over the box [-1, 1]^D, of value |x|_1: E|θ + σZ| =
σ√(2/π) exp(-θ²/2σ²) + θ(2Φ(θ/σ) - 1), gradient 2Φ(θ/σ) - 1. Every random
call has a fixed seed, so each test is deterministic.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import grad, jacrev, vmap

import paramtx as ptx

EULER_GAMMA = 0.5772156649015329
THETA = torch.tensor([[-0.6, 1.9, -0.2, 1.1, -1.0], [-0.6, 1.0, -0.2, 1.8, -1.0], [0.0, 0.0, 0.0, 0.0, 0.0]])


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x / math.sqrt(2.0))


def sign(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, 1.0, -1.0).to(x.dtype)


@pytest.mark.parametrize("sigma", [0.5, 0.1])
def test_gumbel_argmax_max_is_sigma_logsumexp_plus_euler_gamma_and_its_gradient_the_softmax(sigma):
    n = 4000
    theta = THETA.clone().requires_grad_(True)
    value = ptx.perturbed_max(theta, num_samples=n, sigma=sigma, seed=0)
    exact = sigma * torch.logsumexp(THETA / sigma, -1) + sigma * EULER_GAMMA
    assert value.shape == (3,)
    assert torch.all((value.detach() - exact).abs() <= 3 * sigma * math.pi / math.sqrt(6 * n))
    value.sum().backward()
    p = torch.softmax(THETA / sigma, -1)
    assert torch.all((theta.grad - p).abs() <= 3 * torch.sqrt(p * (1 - p) / n) + 1 / n)


def test_gradient_is_the_perturbed_argmax_of_the_same_draws():
    theta = THETA.clone().requires_grad_(True)
    options = dict(num_samples=500, sigma=0.5, seed=3)
    ptx.perturbed_max(theta, **options).sum().backward()
    assert torch.equal(theta.grad, ptx.perturbed_argmax(THETA, **options))


def test_pathwise_gradient_is_far_more_accurate_than_a_score_function_estimate():
    """The same smoothed max through the generic estimator: its gradient carries 1/σ score terms."""
    sigma, n, copies = 0.1, 200, 50
    theta = THETA[:1].expand(copies, -1).clone().requires_grad_(True)
    exact = torch.softmax(THETA[:1] / sigma, -1)
    ptx.perturbed_max(theta, num_samples=n, sigma=sigma, seed=0).sum().backward()
    pathwise = ((theta.grad - exact) ** 2).mean()
    theta.grad = None

    def max_value(x):  # <x, one_hot(argmax(x))> = max(x), per row
        return x.amax(-1)

    generic = ptx.perturbed(max_value, num_samples=n, sigma=sigma, noise="gumbel", seed=0)
    generic(theta).sum().backward()
    score_function = ((theta.grad - exact) ** 2).mean()
    assert pathwise * 100 < score_function


@pytest.mark.parametrize("antithetic", [False, True])
def test_custom_solver_sign_on_the_box_with_normal_noise(antithetic):
    """max over [-1, 1]^D of <x, y> is |x|_1, solved by sign(x)."""
    sigma, n = 0.5, 20_000
    theta = torch.tensor([[-0.8, -0.1, 0.0, 0.3, 1.2]], requires_grad=True)
    value = ptx.perturbed_max(theta, sign, num_samples=n, sigma=sigma, noise="normal", seed=1, antithetic=antithetic)
    t = theta.detach()
    per_element = sigma * math.sqrt(2 / math.pi) * torch.exp(-0.5 * (t / sigma) ** 2) + t * (2 * normal_cdf(t / sigma) - 1)
    # Var|θ + σZ| <= E(θ + σZ)² = θ² + σ², summed over the independent elements.
    se = math.sqrt(float((t**2 + sigma**2).sum()) / n)
    assert abs(value.item() - per_element.sum().item()) <= 3 * se
    value.sum().backward()
    expected = 2 * normal_cdf(t / sigma) - 1
    # Each entry is a mean of +-1 variables (n / 2 independent pairs at worst): SE <= sqrt(2 / n).
    assert torch.all((theta.grad - expected).abs() <= 3 * math.sqrt(2 / n))


def test_default_solver_is_the_argmax_along_the_last_dim():
    theta = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    value = ptx.perturbed_max(theta, num_samples=300, sigma=0.5, seed=0)
    assert value.shape == (2,)
    g = grad(lambda t: ptx.perturbed_max(t, num_samples=300, sigma=0.5, seed=0).sum())(theta)
    assert torch.allclose(g.sum(-1), torch.ones(2, 3))  # one soft one-hot per row of the last dim


# ------------------------------------------------------------ torch.func


def test_torch_func_grad_vmap_and_jacrev_agree_with_autograd_and_loops():
    def f(t):
        return ptx.perturbed_max(t, num_samples=400, sigma=0.5, seed=2)

    theta = THETA.clone().requires_grad_(True)
    f(theta).sum().backward()
    assert torch.equal(grad(lambda t: f(t).sum())(THETA), theta.grad)
    stacked = THETA[None].expand(2, 3, 5) + torch.tensor([0.0, 0.5])[:, None, None]
    assert torch.allclose(vmap(f)(stacked), torch.stack([f(x) for x in stacked]), atol=1e-6)
    per_copy = vmap(grad(lambda t: f(t).sum()))(stacked)
    assert torch.allclose(per_copy, torch.stack([grad(lambda t: f(t).sum())(x) for x in stacked]), atol=1e-6)
    jac = jacrev(f)(THETA)
    assert jac.shape == (3, 3, 5)
    assert torch.allclose(jac[torch.arange(3), torch.arange(3)], theta.grad)
    assert torch.all(jac[0, 1:] == 0)  # examples are independent


def test_unbatched_and_float64():
    theta = THETA[0].double().requires_grad_(True)
    value = ptx.perturbed_max(theta, num_samples=200, batched=False, seed=0)
    assert value.shape == () and value.dtype == torch.float64
    assert value == ptx.perturbed_max(THETA[:1].double(), num_samples=200, seed=0)[0]
    value.backward()
    assert theta.grad.dtype == torch.float64 and theta.grad.shape == (5,)


def test_nan_in_an_example_gives_nan_value_and_gradient_for_that_example_only():
    theta = THETA.clone()
    theta[1, 2] = float("nan")
    theta.requires_grad_(True)
    value = ptx.perturbed_max(theta, num_samples=100, seed=0)
    value.sum().backward()
    assert torch.isnan(value[1]) and torch.isnan(theta.grad[1]).all()
    assert torch.isfinite(value[[0, 2]]).all() and torch.isfinite(theta.grad[[0, 2]]).all()


def test_second_derivatives_raise():
    theta = THETA.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ptx.perturbed_max(theta, num_samples=50, seed=0).sum(), theta, create_graph=True)
    with pytest.raises(NotImplementedError, match="^perturbed_max: second derivatives"):
        g.sum().backward()


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: ptx.perturbed_max(THETA, lambda x: x[:, :2]), ValueError,
         r"^perturbed_max: func must return solutions of the shape of theta, one per example \(5,\), got \(2,\)"),
        (lambda: ptx.perturbed_max(THETA, 3), TypeError, r"^perturbed_max: func must be callable, got 3"),
        (lambda: ptx.perturbed_max(THETA, antithetic=True), ValueError,
         r"^perturbed_max: antithetic=True needs noise='normal'"),
        (lambda: ptx.perturbed_max(THETA, sigma=-1.0), ValueError, r"^perturbed_max: sigma must satisfy 0 < sigma"),
        (lambda: ptx.perturbed_max(THETA[0]), ValueError, r"^perturbed_max: a batched input must have rank >= 2"),
        (lambda: ptx.perturbed_max([1.0]), TypeError, r"^perturbed_max: the input must be a tensor, got list"),
    ],
)
def test_invalid_arguments_raise(call, error, message):
    with pytest.raises(error, match=message):
        call()
