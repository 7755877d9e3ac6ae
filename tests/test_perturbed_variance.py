"""The gradient estimators of ``perturbed``: plain, control variate (leave-one-out
baseline) and antithetic pairs.

Independent estimates come from the batch: every example draws its own noise,
so a batch of ``copies`` identical examples gives ``copies`` independent
estimates in one call (the seeds are fixed, so every test is deterministic).
Closed forms: with Gumbel noise the perturbed one-hot argmax is
``softmax(θ/σ)``; with normal noise the perturbed sign is ``2Φ(θ/σ) - 1`` per
element, of derivative ``2φ(θ/σ)/σ``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import grad, jacrev, vmap

import paramtx as ptx
from paramtx._perturbations.argmax import one_hot_argmax
from ptx_testing import bytes_saved_for_backward

STRATEGIES = ["jacobian", "recompute"]


def problem(d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores θ and downstream weights w, of length d, fixed per d."""
    generator = torch.Generator().manual_seed(d)
    return torch.randn(d, generator=generator), torch.randn(d, generator=generator)


def softmax_gradient(theta: torch.Tensor, w: torch.Tensor, sigma: float) -> torch.Tensor:
    """The exact gradient of <w, E[one_hot(argmax(θ + σG))]> = <w, softmax(θ/σ)>."""
    return grad(lambda t: (torch.softmax(t / sigma, -1) * w).sum())(theta)


def estimates(theta, w, *, copies, constant=0.0, **options):
    """``copies`` independent gradient estimates of <w, f> and of <w, f> + constant, (copies, D) each."""

    def scores(x):  # (M, D) -> (M, 2): the downstream loss, without and with the constant
        loss = (one_hot_argmax(x) * w).sum(-1)
        return torch.stack([loss, loss + constant], -1)

    f = ptx.perturbed(scores, noise="gumbel", strategy="jacobian", **options)
    batch = theta.expand(copies, -1).clone().requires_grad_(True)
    out = f(batch)
    (without,) = torch.autograd.grad(out[:, 0].sum(), batch, retain_graph=True)
    (with_constant,) = torch.autograd.grad(out[:, 1].sum(), batch)
    return without, with_constant


@pytest.mark.parametrize("d", [5, 50])
@pytest.mark.parametrize("sigma", [0.5, 0.1])
@pytest.mark.parametrize("n", [100, 1000, 10_000])
def test_control_variate_error_is_at_most_the_plain_one_and_a_tenth_with_a_constant(d, sigma, n):
    """Mean squared error over 30 independent estimates, against the closed form, on the same draws
    (same seed) for both estimators. The constant 10 is added to the downstream loss inside
    the solver: it changes no true gradient, but inflates the plain estimate's variance by
    about 100 E[s²]/σ², against which the measured ratios are 0.003-0.011."""
    theta, w = problem(d)
    exact = softmax_gradient(theta, w, sigma)
    options = dict(num_samples=n, sigma=sigma, seed=n + d, copies=30, constant=10.0)
    plain, plain_constant = estimates(theta, w, control_variate=False, **options)
    cv, cv_constant = estimates(theta, w, control_variate=True, **options)

    def mse(g):
        return ((g - exact) ** 2).mean()

    assert mse(cv) <= mse(plain)
    assert mse(cv_constant) <= 0.1 * mse(plain_constant)
    # The baseline makes the estimate blind to the constant (float32 rounding apart).
    assert torch.allclose(cv_constant, cv, rtol=1e-3, atol=1e-3 / sigma)


@pytest.mark.parametrize("constant", [0.0, 10.0])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_control_variate_is_unbiased(constant, strategy):
    """The mean of 2000 independent estimates lies within 3 standard errors (estimated from
    the 2000 estimates themselves) of the exact gradient, entry by entry."""
    theta, w = problem(5)
    sigma, copies = 0.5, 2000
    exact = softmax_gradient(theta, w, sigma)
    f = ptx.perturbed(lambda x: (one_hot_argmax(x) * w).sum(-1) + constant, num_samples=20, sigma=sigma,
                      noise="gumbel", seed=1, strategy=strategy)
    batch = theta.expand(copies, -1).clone().requires_grad_(True)
    f(batch).sum().backward()
    mean, se = batch.grad.mean(0), batch.grad.std(0) / math.sqrt(copies)
    assert torch.all((mean - exact).abs() <= 3 * se)
    assert torch.all(se < 0.1 * exact.abs().max())  # the check is not vacuous


def sign(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, 1.0, -1.0).to(x.dtype)


def sign_gradient(theta: torch.Tensor, sigma: float) -> torch.Tensor:
    """d/dθ of E[sign(θ + σZ)] = 2Φ(θ/σ) - 1, per element: 2φ(θ/σ)/σ."""
    return 2 * torch.exp(-0.5 * (theta / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_antithetic_is_unbiased_and_blind_to_a_constant(strategy):
    """Each pair's terms f(θ + σZ) Z - f(θ - σZ) Z cancel a constant added to f, so the
    estimate is the same with it (float32 rounding apart), where the plain one's error grows."""
    theta = torch.tensor([-0.3, 0.0, 0.2, 0.7, -1.0])
    sigma, copies, n = 0.5, 1000, 40
    exact = sign_gradient(theta, sigma)

    def estimate(constant=0.0, **options):
        f = ptx.perturbed(lambda x: sign(x) + constant, num_samples=n, sigma=sigma, noise="normal", seed=2,
                          strategy=strategy, **options)
        batch = theta.expand(copies, -1).clone().requires_grad_(True)
        f(batch).sum().backward()
        return batch.grad

    antithetic = estimate(antithetic=True)
    mean, se = antithetic.mean(0), antithetic.std(0) / math.sqrt(copies)
    assert torch.all((mean - exact).abs() <= 3 * se)
    # The control variate then changes nothing: the pairs are their own baseline.
    assert torch.equal(estimate(antithetic=True, control_variate=False), antithetic)
    assert torch.allclose(estimate(10.0, antithetic=True), antithetic, atol=1e-3 / sigma)
    plain_constant = estimate(10.0, control_variate=False)
    assert ((antithetic - exact) ** 2).mean() <= 0.1 * ((plain_constant - exact) ** 2).mean()


@pytest.mark.parametrize("options", [dict(), dict(control_variate=False), dict(antithetic=True)])
def test_both_strategies_agree_across_chunks_and_under_torch_func(options):
    """Recompute redraws the forward's noise, pairs included (an odd chunk_size is rounded down
    for antithetic pairs): both strategies give one estimate, under jacrev and vmap too."""
    theta = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    w = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    results = []
    for strategy in STRATEGIES:
        soft = ptx.perturbed(one_hot_argmax, num_samples=300, sigma=0.4, noise="normal", seed=5,
                             chunk_size=77, strategy=strategy, **options)
        per_example = vmap(grad(lambda t: (soft(t) * w[:1]).sum()))(theta[:, None])
        results.append((grad(lambda t: (soft(t) * w).sum())(theta), jacrev(soft)(theta), per_example))
    for jacobian_result, recompute_result in zip(*results):
        assert torch.allclose(jacobian_result, recompute_result, rtol=1e-4, atol=1e-5)  # float32 sums of 300 terms


def test_antithetic_draws_come_in_pairs():
    """Two samples, one pair: the mean of a linear solver is exactly θ (Z and -Z cancel)."""
    theta = torch.tensor([[0.3, -1.2, 2.0]])
    mean = ptx.perturbed(lambda x: 3 * x, num_samples=2, sigma=0.7, antithetic=True, seed=0)(theta)
    assert torch.allclose(mean, 3 * theta, atol=1e-6)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(antithetic=True, noise="gumbel"), r"^perturbed: antithetic=True needs noise='normal' .*got noise='gumbel'"),
        (dict(antithetic=True, num_samples=999), r"^perturbed: antithetic=True needs an even num_samples .*got 999"),
        (dict(num_samples=1), r"^perturbed: control_variate=True needs num_samples >= 2 .*got 1"),
    ],
)
def test_sampling_options_that_cannot_work_raise_when_built(options, message):
    with pytest.raises(ValueError, match=message):
        ptx.perturbed(one_hot_argmax, **options)


def test_option_types_are_checked_and_one_sample_works_without_the_baseline():
    with pytest.raises(TypeError, match=r"^perturbed: control_variate must be a bool, got 1"):
        ptx.perturbed(one_hot_argmax, control_variate=1)
    with pytest.raises(TypeError, match=r"^perturbed_argmax: antithetic must be a bool, got 'yes'"):
        ptx.perturbed_argmax(torch.zeros(1, 3), antithetic="yes")
    with pytest.raises(ValueError, match=r"^perturbed_argmax: antithetic=True needs noise='normal'"):
        ptx.perturbed_argmax(torch.zeros(1, 3), antithetic=True)
    theta = torch.zeros(1, 3, requires_grad=True)
    ptx.perturbed(one_hot_argmax, num_samples=1, control_variate=False, seed=0)(theta)[0, 0].backward()
    assert torch.isfinite(theta.grad).all()


def test_perturbed_argmax_takes_the_estimator_options():
    theta, w = problem(5)
    sigma = 0.5
    exact = softmax_gradient(theta, w, sigma)
    batch = theta.expand(500, -1).clone().requires_grad_(True)
    (ptx.perturbed_argmax(batch, num_samples=50, sigma=sigma, seed=0, control_variate=True) * w).sum().backward()
    cv = batch.grad.clone()
    batch.grad = None
    (ptx.perturbed_argmax(batch, num_samples=50, sigma=sigma, seed=0, control_variate=False) * w).sum().backward()
    assert ((cv - exact) ** 2).mean() < ((batch.grad - exact) ** 2).mean()
    normal = ptx.perturbed_argmax(theta[None], num_samples=50, noise="normal", antithetic=True, seed=0)
    assert torch.allclose(normal.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("options", [dict(), dict(antithetic=True)])
def test_bytes_saved_for_backward_do_not_grow_with_num_samples(strategy, options):
    """The baseline needs only sums (of f and of the scores), accumulated on the fly."""
    theta = torch.randn(4, 6, generator=torch.Generator().manual_seed(0)).requires_grad_(True)

    def saved_bytes(num_samples):
        return bytes_saved_for_backward(
            lambda: ptx.perturbed(one_hot_argmax, num_samples=num_samples, noise="normal", seed=0,
                                  strategy=strategy, **options)(theta)
        )

    assert saved_bytes(1_000) == saved_bytes(100_000)
