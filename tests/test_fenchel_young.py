"""Tests for the perturbed Fenchel-Young loss: value (up to a constant in theta) and gradient in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import grad, vmap

import paramtx as ptx
from paramtx._perturbations.argmax import one_hot_argmax

THETA = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.1, 0.3, 0.2, -0.4]])
Y = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
OPTIONS = dict(num_samples=2000, sigma=0.5, noise="gumbel", seed=3)
EULER_GAMMA = 0.5772156649015329


def ranks(x: torch.Tensor) -> torch.Tensor:
    """1 + the rank of each entry along the last dim: the maximizer of <x, π> over permutations π of 1..n."""
    return 1.0 + torch.argsort(torch.argsort(x, dim=-1), dim=-1).to(x.dtype)


def argmin(x: torch.Tensor) -> torch.Tensor:
    return one_hot_argmax(-x)


@pytest.mark.parametrize("maximize", [True, False])
@pytest.mark.parametrize("batched", [True, False])
def test_value_is_the_perturbed_max_minus_the_target_score_and_gradient_the_closed_form(maximize, batched):
    func = one_hot_argmax if maximize else argmin
    theta, y = (THETA, Y) if batched else (THETA[0], Y[0])
    y_hat = ptx.perturbed(func, batched=batched, **OPTIONS)(theta)
    max_value = ptx.perturbed_max(theta, func, batched=batched, **OPTIONS)  # the same draws
    theta = theta.clone().requires_grad_(True)
    loss = ptx.fenchel_young_loss(theta, y, func, batched=batched, maximize=maximize, **OPTIONS)
    target_score = (theta.detach() * y).sum(-1)
    expected = max_value - target_score if maximize else target_score - max_value
    assert torch.allclose(loss.detach(), expected, rtol=0, atol=1e-6)  # float32 rounding of one sum
    loss.sum().backward()
    assert torch.equal(theta.grad, (y_hat - y) if maximize else (y - y_hat))


@pytest.mark.parametrize("sigma", [0.5, 0.1])
def test_gumbel_argmax_value_is_sigma_logsumexp_plus_euler_gamma_minus_the_target_score(sigma):
    """For the one-hot argmax, max_i(θ_i + σG_i) is Gumbel of location σ logsumexp(θ/σ)
    and scale σ: its mean is that plus σγ, its variance σ²π²/6, so SE = σπ/√(6N)."""
    n = 4000
    theta = THETA.clone().requires_grad_(True)
    loss = ptx.fenchel_young_loss(theta, Y, one_hot_argmax, num_samples=n, sigma=sigma, noise="gumbel", seed=5)
    exact = sigma * torch.logsumexp(THETA / sigma, -1) + sigma * EULER_GAMMA - (THETA * Y).sum(-1)
    se = sigma * math.pi / math.sqrt(6 * n)
    assert torch.all((loss.detach() - exact).abs() <= 3 * se)
    loss.sum().backward()
    # Each gradient entry is a mean of n Bernoulli(p) indicators, minus y.
    p = torch.softmax(THETA / sigma, -1)
    assert torch.all((theta.grad - (p - Y)).abs() <= 3 * torch.sqrt(p * (1 - p) / n) + 1 / n)


def test_value_matches_the_reference_stand_in_nowhere_but_shares_its_minimizer():
    """The value is the loss (up to a constant), not |ŷ - y|²: it differs from it, and
    it is smallest, among targets, at the most likely one."""
    targets = torch.eye(4)
    theta = THETA[:1].expand(4, 4)
    loss = ptx.fenchel_young_loss(theta, targets, one_hot_argmax, **OPTIONS)
    y_hat = ptx.perturbed(one_hot_argmax, **OPTIONS)(theta)
    stand_in = ((y_hat - targets) ** 2).sum(-1)
    assert not torch.allclose(loss, stand_in, atol=0.1)
    assert loss.argmin() == THETA[0].argmax()
    # With the same draws, two targets' losses differ by exactly the difference of their scores.
    first, second = (ptx.fenchel_young_loss(THETA[0], y, one_hot_argmax, batched=False, **OPTIONS) for y in targets[:2])
    assert torch.allclose(second - first, THETA[0, 0] - THETA[0, 1], atol=1e-6)  # float32 rounding


def test_gradient_is_scaled_per_example_and_reductions():
    y_hat = ptx.perturbed(one_hot_argmax, **OPTIONS)(THETA)
    theta = THETA.clone().requires_grad_(True)
    ptx.fenchel_young_loss(theta, Y, one_hot_argmax, **OPTIONS).backward(torch.tensor([2.0, -1.0]))
    assert torch.equal(theta.grad, torch.tensor([[2.0], [-1.0]]) * (y_hat - Y))
    per_example = ptx.fenchel_young_loss(THETA, Y, one_hot_argmax, **OPTIONS)
    assert per_example.shape == (2,)
    total = ptx.fenchel_young_loss(THETA, Y, one_hot_argmax, reduction="sum", **OPTIONS)
    mean = ptx.fenchel_young_loss(THETA, Y, one_hot_argmax, reduction="mean", **OPTIONS)
    assert torch.equal(total, per_example.sum()) and torch.equal(mean, per_example.mean())


def test_ranking_gradients_behave_as_in_the_reference():
    """The reference's check: with a ranking solver, the gradient vanishes where
    the target is surely right, shrinks as the target nears the prediction, and
    sums to zero (every ranking sums to the same)."""
    loss_fn = ptx.FenchelYoungLoss(ranks, num_samples=10_000, sigma=0.1, batched=False, seed=0)
    theta = torch.tensor([1.0, 20.0, 7.3, 7.35])
    y_true = torch.tensor([1.0, 4.0, 3.0, 2.0])
    y_hard_minimum = torch.tensor([1.0, 4.0, 2.0, 3.0])
    y_perturbed_minimum = ptx.perturbed(ranks, num_samples=10_000, sigma=0.1, batched=False, seed=0)(theta)

    def gradient(y):
        return grad(lambda t: loss_fn(t, y))(theta)

    g_true, g_hard, g_perturbed = gradient(y_true), gradient(y_hard_minimum), gradient(y_perturbed_minimum)
    assert torch.equal(g_true[:2], torch.zeros(2))
    assert g_perturbed.norm() < g_hard.norm() < g_true.norm()
    for g in (g_true, g_hard, g_perturbed):
        assert abs(g.sum()) < 1e-5


def test_module_equals_function_and_passes_extra_arguments():
    def masked_argmax(x, mask):
        return one_hot_argmax(x - 1e9 * (~mask))

    mask = torch.tensor([True, True, False, True])
    loss_fn = ptx.FenchelYoungLoss(masked_argmax, maximize=True, **OPTIONS)
    expected = ptx.fenchel_young_loss(THETA, Y, masked_argmax, mask, **OPTIONS)
    assert torch.equal(loss_fn(THETA, Y, mask), expected)
    assert repr(loss_fn) == (
        "FenchelYoungLoss(func=masked_argmax, num_samples=2000, sigma=0.5, noise='gumbel', "
        "batched=True, maximize=True, reduction='none')"
    )


def test_works_under_torch_func():
    loss_fn = ptx.FenchelYoungLoss(one_hot_argmax, **OPTIONS)
    y_hat = ptx.perturbed(one_hot_argmax, **OPTIONS)(THETA)
    assert torch.equal(grad(lambda t: loss_fn(t, Y).sum())(THETA), y_hat - Y)
    per_example = vmap(lambda t, y: loss_fn(t, y))(THETA[:, None], Y[:, None])
    looped = torch.stack([loss_fn(t, y) for t, y in zip(THETA[:, None], Y[:, None])])
    assert torch.allclose(per_example, looped)


def test_no_gradient_flows_to_the_target():
    y = Y.clone().requires_grad_(True)
    theta = THETA.clone().requires_grad_(True)
    ptx.fenchel_young_loss(theta, y, one_hot_argmax, **OPTIONS).sum().backward()
    assert y.grad is None and theta.grad is not None


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: ptx.fenchel_young_loss(THETA, Y[:, :3], one_hot_argmax), ValueError,
         r"^fenchel_young_loss: y_true must have the shape of func's output \(2, 4\), got \(2, 3\)"),
        (lambda: ptx.fenchel_young_loss(THETA, Y[:, 0], lambda x: x[:, 0]), ValueError,
         r"^fenchel_young_loss: func must return solutions of the shape of theta"),
        (lambda: ptx.fenchel_young_loss(THETA, Y, one_hot_argmax, reduction="avg"), ValueError,
         r"^fenchel_young_loss: reduction must be one of \('none', 'mean', 'sum'\), got 'avg'"),
        (lambda: ptx.fenchel_young_loss(THETA, Y, one_hot_argmax, reduction=None), TypeError,
         r"^fenchel_young_loss: reduction must be a str, got None"),
        (lambda: ptx.fenchel_young_loss(THETA, Y, one_hot_argmax, maximize=1), TypeError,
         r"^fenchel_young_loss: maximize must be a bool, got 1"),
        (lambda: ptx.fenchel_young_loss(THETA, Y, None), TypeError,
         r"^fenchel_young_loss: func must be callable, got None"),
        (lambda: ptx.fenchel_young_loss(THETA, Y, one_hot_argmax, sigma=0.0), ValueError,
         r"^fenchel_young_loss: sigma must satisfy 0 < sigma, got 0.0"),
        (lambda: ptx.fenchel_young_loss(THETA[0], Y[0], one_hot_argmax), ValueError,
         r"^fenchel_young_loss: a batched input must have rank >= 2"),
        (lambda: ptx.FenchelYoungLoss(one_hot_argmax, noise="cauchy"), ValueError,
         r"^FenchelYoungLoss: noise must be one of \('normal', 'gumbel'\), got 'cauchy'"),
        (lambda: ptx.FenchelYoungLoss(None), TypeError, r"^FenchelYoungLoss: func must be callable, got None"),
    ],
)
def test_invalid_arguments_raise(call, error, message):
    with pytest.raises(error, match=message):
        call()
