"""Tests for ``perturbed`` and ``perturbed_argmax``.

Monte-Carlo tolerances are derived from ``num_samples``: ``5 * SE``, with the
standard error either exact (a mean of bounded variables with known
probabilities) or bounded from the estimator's form (stated at each test).
Every random call uses a fixed seed, so a test's outcome is deterministic.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, jacrev, vmap

import paramtx as ptx
from paramtx._perturbations.argmax import one_hot_argmax
from ptx_testing import DEVICE, bytes_saved_for_backward

STRATEGIES = ["jacobian", "recompute"]
THETA = torch.tensor([[-0.6, 1.9, -0.2, 1.1, -1.0], [-0.6, 1.0, -0.2, 1.8, -1.0]])


def argmax(x: torch.Tensor, axis: int = -1) -> torch.Tensor:
    """The reference implementation's argmax: a one-hot of the largest entry along ``axis``."""
    return F.one_hot(torch.argmax(x, dim=axis), x.shape[axis]).float()


def hard_or(x: torch.Tensor) -> torch.Tensor:
    """The reference implementation's OR of the signs along the last dim, as +-1 (a full reduction)."""
    s = ((torch.sign(x) + 1) / 2.0).type(torch.bool)
    return torch.any(s, dim=-1).type(x.dtype) * 2.0 - 1


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x / math.sqrt(2.0))


def normal_pdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)


def pm1_tolerance(p_true: torch.Tensor, n: int) -> torch.Tensor:
    """5 SE of a mean of n +-1 variables equal to 1 w.p. p, plus one sample's step (2/n)."""
    return 2 * (5 * torch.sqrt(p_true * (1 - p_true) / n) + 1.0 / n)


# --------------------------------------------------------------- closed forms


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gumbel_perturbed_argmax_value_and_gradient_equal_softmax(strategy):
    sigma, n = 0.5, 100_000
    theta = THETA.clone().requires_grad_(True)
    w = torch.tensor([[1.0, -0.5, 0.3, 0.8, -1.0], [0.2, 0.9, -0.7, -0.4, 0.6]])
    y = ptx.perturbed_argmax(theta, num_samples=n, sigma=sigma, seed=1, strategy=strategy)
    (y * w).sum().backward()

    p = torch.softmax(THETA / sigma, -1)
    # Each entry is a mean of n Bernoulli(p) indicators.
    assert torch.all((y.detach() - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n))
    # Gradient: a mean of <w, f> (1 - exp(-Z_d)) / sigma, whose second moment is
    # at most max|w|^2 E[(1 - exp(-Z))^2] / sigma^2 = max|w|^2 / sigma^2.
    expected = grad(lambda t: (torch.softmax(t / sigma, -1) * w).sum())(THETA)
    bound = 5 * w.abs().max() / (sigma * math.sqrt(n))
    assert torch.all((theta.grad - expected).abs() <= bound)


def test_normal_gradient_agrees_with_central_finite_differences():
    """d/dε <v, F(θ + εu)> at 0, by the estimator and by central differences of
    the perturbed value with the same seed (so the same draws).

    Both are means over the same n draws, of s_i = <v, f_i> <Z_i, u> / σ and of
    d_i = <v, f(θ+εu+σZ_i) - f(θ-εu+σZ_i)> / 2ε. With |u| = 1 and |v|_inf = 1:
    E[s^2] <= 1/σ^2; d_i is nonzero only if the argmax flips, which needs some
    pair gap (θ_j - θ_k) + σ(Z_j - Z_k), of density <= 1/(2σ√π), to lie in an
    interval of width <= 2√2 ε: E[d^2] <= (1/ε)^2 C(D,2) 2√2 ε / (2σ√π).
    The difference's SE is <= sqrt(2 E[s^2] + 2 E[d^2]) / √n; the central
    difference's bias is at most ε^2/6 sup|d^3/dε^3 <v, F>| <= ε^2/6 E|Z^3 - 3Z| / σ^3
    <= ε^2/6 √6 / σ^3 (F is a Gaussian smoothing of a function bounded by 1).
    """
    sigma, n, eps, d = 0.5, 4_000_000, 0.05, 3
    theta = torch.tensor([0.1, -0.1, 0.3])
    v = torch.tensor([1.0, -1.0, 0.0])
    u = torch.tensor([1.0, -1.0, 0.2])
    u = u / u.norm()
    soft = ptx.perturbed(argmax, num_samples=n, sigma=sigma, noise="normal", batched=False, seed=3)

    def h(t):
        return (soft(t) * v).sum()

    directional = (grad(h)(theta) * u).sum()
    finite_diff = (h(theta + eps * u) - h(theta - eps * u)) / (2 * eps)
    second_s = 1 / sigma**2
    second_d = (1 / eps) ** 2 * math.comb(d, 2) * 2 * math.sqrt(2) * eps / (2 * sigma * math.sqrt(math.pi))
    bias = eps**2 / 6 * math.sqrt(6) / sigma**3
    tolerance = 5 * math.sqrt((2 * second_s + 2 * second_d) / n) + bias
    assert abs(directional - finite_diff) <= tolerance
    assert abs(directional) > 4 * tolerance  # the check is not vacuous


def test_perturbed_or_value_and_gradient_match_the_closed_form():
    """The reference implementation's example: hard_or of [[-5, 0.2], [-5, 0.1]] is [1, 1]; perturbed, it is not.

    With Gumbel noise P(θ_j + σG <= 0) = exp(-exp(θ_j / σ)), so
    F(θ) = 1 - 2 exp(-S) and dF/dθ_j = 2 exp(-S) exp(θ_j / σ) / σ, S = Σ_j exp(θ_j / σ).
    """
    sigma = 0.1
    theta = torch.tensor([[-5.0, 0.2], [-5.0, 0.1]])
    assert torch.equal(hard_or(theta), torch.tensor([1.0, 1.0]))
    s = torch.exp(theta / sigma).sum(-1)
    value = 1 - 2 * torch.exp(-s)
    n = 1000
    pert_or = ptx.perturbed(hard_or, num_samples=n, sigma=sigma, noise="gumbel", seed=0)
    out = pert_or(theta)
    assert out.shape == (2,)
    assert torch.all((out - value).abs() <= pm1_tolerance(torch.exp(-s), n))
    assert value[1] < 0.87  # the 0.868 of the reference

    n = 20_000
    pert_or = ptx.perturbed(hard_or, num_samples=n, sigma=sigma, noise="gumbel", seed=0)
    gradient = jacrev(lambda t: pert_or(t).sum())(theta)
    expected = 2 * torch.exp(-s)[:, None] * torch.exp(theta / sigma) / sigma
    # |f| = 1 and E[(1 - exp(-Z))^2] = 1: SE <= 1 / (σ √n).
    assert torch.all((gradient - expected).abs() <= 5 / (sigma * math.sqrt(n)))


@pytest.mark.parametrize("sigma", [1e-3, 1e-2, 1e-1])
def test_perturbed_sign_or_is_close_to_the_hard_or(sigma):
    theta = torch.tensor([[-0.3, -1.2, 1.6], [-0.4, -2.4, -1.0]])
    n = 1000
    out = ptx.perturbed(hard_or, sigma=sigma, num_samples=n, seed=0)(theta)
    p_all_negative = normal_cdf(-theta / sigma).prod(-1)
    expected = 1 - 2 * p_all_negative
    assert torch.allclose(expected, torch.tensor([1.0, -1.0]), atol=1e-3)
    assert torch.all((out - expected).abs() <= pm1_tolerance(p_all_negative, n))


def test_perturbed_sign_or_gradient_points_to_the_entries_on_the_fence():
    sigma, n = 0.1, 40_000
    theta = torch.tensor([[-0.6, -1.2, 0.5 * sigma], [-2 * sigma, -2.4, -1.0]])
    soft_or = ptx.perturbed(hard_or, sigma=sigma, num_samples=n, seed=0)
    gradient = grad(lambda t: soft_or(t).sum())(theta)
    # F = 1 - 2 Π_k Φ(-θ_k/σ): dF/dθ_j = 2 φ(θ_j/σ)/σ Π_{k≠j} Φ(-θ_k/σ).
    cdf = normal_cdf(-theta / sigma)
    expected = 2 * normal_pdf(theta / sigma) / sigma * cdf.prod(-1, keepdim=True) / cdf
    assert torch.all((gradient - expected).abs() <= 5 / (sigma * math.sqrt(n)))  # |f| = 1, E[Z^2] = 1
    assert gradient[0, 2] > 0 and gradient[1, 0] > 0
    assert torch.all(gradient <= gradient[0, 2])


# ---------------------------------------------------------------- signatures


def test_unbatched_input_is_one_example_of_the_batched_call():
    soft = ptx.perturbed(argmax, num_samples=500, sigma=0.5, noise="gumbel", batched=False, seed=4)
    soft_batched = ptx.perturbed(argmax, num_samples=500, sigma=0.5, noise="gumbel", seed=4)
    theta = THETA[0].clone().requires_grad_(True)
    out = soft(theta)
    assert out.shape == (5,)
    assert torch.equal(out, soft_batched(THETA[:1])[0])
    out[1].backward()
    assert theta.grad.shape == (5,)


@pytest.mark.parametrize("batched", [True, False])
def test_full_reduce_output(batched):
    theta = THETA if batched else THETA[0]
    soft_or = ptx.perturbed(hard_or, num_samples=300, sigma=0.5, batched=batched, seed=0)
    out = soft_or(theta)
    assert out.shape == theta.shape[:-1]
    assert grad(lambda t: soft_or(t).sum())(theta).shape == theta.shape


def test_multi_dim_examples_and_any_output_shape():
    theta = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0), device="cpu").to(DEVICE)
    soft = ptx.perturbed_argmax(theta, num_samples=200, seed=0)
    assert soft.shape == (3, 2, 4)
    assert torch.allclose(soft.sum((1, 2)), torch.ones(3))  # one-hot over the whole example

    def top_and_bottom(x):  # (M, 2, 4) -> (M, 2)
        flat = x.flatten(1)
        return torch.stack([flat.amax(-1), flat.amin(-1)], -1)

    soft_range = ptx.perturbed(top_and_bottom, num_samples=200, sigma=0.1, seed=0)
    assert soft_range(theta).shape == (3, 2)
    assert jacrev(soft_range)(theta).shape == (3, 2, 3, 2, 4)


def test_extra_arguments_are_passed_to_func():
    def masked_argmax(x, mask, *, shift=0.0):
        return argmax(x + shift - 1e9 * (~mask))

    mask = torch.tensor([True, False, True, True, False])
    soft = ptx.perturbed(masked_argmax, num_samples=200, sigma=0.5, seed=0)
    out = soft(THETA, mask, shift=1.0)
    assert torch.all(out[:, ~mask] == 0)
    assert torch.allclose(out.sum(-1), torch.ones(2))


# -------------------------------------------------------------------- errors


def test_batched_input_of_rank_below_two_raises():
    with pytest.raises(ValueError, match=r"^perturbed: a batched input must have rank >= 2.*\(5,\)"):
        ptx.perturbed(argmax, sigma=0.5)(THETA[0])
    with pytest.raises(ValueError, match=r"^perturbed_argmax: a batched input"):
        ptx.perturbed_argmax(THETA[0])


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"noise": "laplace"}, ValueError, r"^perturbed: noise must be one of \('normal', 'gumbel'\), got 'laplace'"),
        ({"noise": 3}, TypeError, r"^perturbed: noise must be a str, got 3"),
        ({"sigma": -1.0}, ValueError, r"^perturbed: sigma must satisfy 0 < sigma, got -1.0"),
        ({"sigma": 0}, ValueError, r"^perturbed: sigma must satisfy 0 < sigma, got 0.0"),
        ({"sigma": math.inf}, ValueError, r"^perturbed: sigma must be finite, got inf"),
        ({"sigma": "1"}, TypeError, r"^perturbed: sigma must be a real number, got '1'"),
        ({"num_samples": 0}, ValueError, r"^perturbed: num_samples must satisfy num_samples >= 1, got 0"),
        ({"num_samples": 10.0}, TypeError, r"^perturbed: num_samples must be an int, got 10.0"),
        ({"num_samples": True}, TypeError, r"^perturbed: num_samples must be an int, got True"),
        ({"chunk_size": 0}, ValueError, r"^perturbed: chunk_size must satisfy chunk_size >= 1, got 0"),
        ({"batched": 1}, TypeError, r"^perturbed: batched must be a bool, got 1"),
        ({"seed": -1}, ValueError, r"^perturbed: seed must satisfy seed >= 0, got -1"),
        ({"seed": 2**64}, ValueError, r"^perturbed: seed must satisfy seed < 2\*\*64"),
        ({"seed": 0, "generator": torch.Generator()}, ValueError, r"^perturbed: give seed or generator, not both"),
        ({"generator": 0}, TypeError, r"^perturbed: generator must be a torch.Generator, got 0"),
        ({"strategy": "store"}, ValueError, r"^perturbed: strategy must be one of .*, got 'store'"),
        ({"strategy": 1}, TypeError, r"^perturbed: strategy must be a str, got 1"),
        ({"sigma": float("inf")}, ValueError, r"^perturbed: sigma must be finite, got inf"),
        ({"device": 0}, TypeError, r"^perturbed: device must be a str or torch.device, got 0"),
    ],
)
def test_invalid_options_raise_when_built(options, error, message):
    with pytest.raises(error, match=message):
        ptx.perturbed(argmax, **options)
    with pytest.raises(error, match=message):
        ptx.perturbed(**options)  # the decorator form checks before it decorates


def test_bad_func_and_inputs_raise():
    with pytest.raises(TypeError, match=r"^perturbed: func must be callable, got 3"):
        ptx.perturbed(3)
    soft = ptx.perturbed(argmax, num_samples=10)
    with pytest.raises(TypeError, match=r"^perturbed: the input must be a floating-point tensor, got dtype torch.int"):
        soft(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"^perturbed: the input must be a tensor, got list"):
        soft([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"^perturbed: func must return one solution per input row"):
        ptx.perturbed(lambda x: x.sum(), num_samples=10)(THETA)
    with pytest.raises(TypeError, match=r"^perturbed: func must return a tensor, got list"):
        ptx.perturbed(lambda x: [0.0], num_samples=10)(THETA)


# ---------------------------------------------------------- decorator forms


def test_decorator_forms_and_function_form_agree():
    options = dict(num_samples=300, sigma=0.5, noise="gumbel", seed=7)

    @ptx.perturbed(**options)
    def decorated(x, axis=-1):
        """Docstring kept."""
        return argmax(x, axis)

    @ptx.perturbed
    def bare(x):
        return argmax(x)

    @ptx.perturbed()
    def empty_call(x):
        return argmax(x)

    expected = ptx.perturbed(argmax, **options)(THETA)
    assert torch.equal(decorated(THETA), expected)
    assert decorated.__name__ == "decorated" and decorated.__doc__ == "Docstring kept."
    defaults = ptx.perturbed(argmax, seed=7)
    assert torch.equal(ptx.perturbed(seed=7)(argmax)(THETA), defaults(THETA))
    torch.manual_seed(0)
    a = bare(THETA)
    torch.manual_seed(0)
    b = empty_call(THETA)
    assert torch.equal(a, b) and a.shape == THETA.shape


# ----------------------------------------------------------- autograd usage


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_output_used_twice_accumulates_both_gradients(strategy):
    soft = ptx.perturbed(argmax, num_samples=500, sigma=0.5, noise="gumbel", seed=0, strategy=strategy)
    w = torch.arange(10.0).reshape(2, 5)
    theta = THETA.clone().requires_grad_(True)
    y = soft(theta)
    ((y * w).sum() + (y**2).sum()).backward()
    both = theta.grad.clone()
    theta.grad = None
    (soft(theta) * w).sum().backward()
    first = theta.grad.clone()
    theta.grad = None
    y = soft(theta)
    (y**2).sum().backward(retain_graph=True)
    second = theta.grad.clone()
    (y**2).sum().backward()  # a second backward through the same graph accumulates
    assert torch.allclose(theta.grad, 2 * second)
    assert torch.allclose(both, first + second, atol=1e-4)  # float32 sums of 500 terms


def test_strategies_give_the_same_estimate_across_chunks():
    """Recompute redraws the forward's noise chunk by chunk: it must find the same draws."""
    theta = torch.randn(3, 7, generator=torch.Generator().manual_seed(0), device="cpu").to(DEVICE)
    w = torch.randn(3, 7, generator=torch.Generator().manual_seed(1), device="cpu").to(DEVICE)
    grads = []
    for strategy in STRATEGIES:
        soft = ptx.perturbed(argmax, num_samples=1001, sigma=0.3, seed=5, chunk_size=64, strategy=strategy)
        grads.append(grad(lambda t: (soft(t) * w).sum())(theta))
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_perturbed_argmax_fast_path_equals_the_dense_one_hot(strategy):
    """perturbed_argmax counts positions instead of summing one-hots: same draws, same numbers."""
    theta = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0), device="cpu").to(DEVICE)
    options = dict(num_samples=700, sigma=0.5, noise="gumbel", seed=9, chunk_size=128, strategy=strategy)
    dense = ptx.perturbed(one_hot_argmax, **options)

    def fast(t):
        return ptx.perturbed_argmax(t, **options)

    assert torch.equal(fast(theta), dense(theta))
    assert torch.allclose(jacrev(fast)(theta), jacrev(dense)(theta), atol=1e-6)
    assert torch.allclose(vmap(fast)(theta[:, None]), vmap(dense)(theta[:, None]), atol=1e-6)


def test_float64_in_float64_out_and_device_option():
    theta = THETA.double().requires_grad_(True)
    y = ptx.perturbed_argmax(theta, num_samples=100, seed=0, device="cpu")
    assert y.dtype == torch.float64
    y[0, 1].backward()
    assert theta.grad.dtype == torch.float64


# ------------------------------------------------------------ torch.func


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_torch_func_grad_equals_autograd(strategy):
    soft = ptx.perturbed(argmax, num_samples=400, sigma=0.5, noise="gumbel", seed=2, strategy=strategy)
    theta = THETA.clone().requires_grad_(True)
    torch.linalg.norm(soft(theta)).backward()
    assert torch.equal(grad(lambda t: torch.linalg.norm(soft(t)))(THETA), theta.grad)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_vmap_equals_a_loop_over_examples(strategy):
    soft = ptx.perturbed(argmax, num_samples=400, sigma=0.5, noise="gumbel", seed=2, strategy=strategy)
    stacked = THETA.reshape(2, 1, 5).expand(2, 3, 5) + torch.linspace(0, 1, 3)[:, None]  # (2, B=3, 5)
    looped = torch.stack([soft(x) for x in stacked])
    assert torch.allclose(vmap(soft)(stacked), looped, atol=1e-6)
    per_example = vmap(grad(lambda t: soft(t)[:, 1].sum()))(stacked)
    looped_grads = torch.stack([grad(lambda t: soft(t)[:, 1].sum())(x) for x in stacked])
    assert torch.allclose(per_example, looped_grads, atol=1e-6)
    outer = grad(lambda t: vmap(soft)(t)[..., 1].sum())(stacked)
    assert torch.allclose(outer, looped_grads, atol=1e-6)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_jacrev_equals_one_vjp_per_output(strategy):
    soft = ptx.perturbed(argmax, num_samples=400, sigma=0.5, noise="gumbel", seed=2, strategy=strategy)
    jac = jacrev(soft)(THETA)
    assert jac.shape == (2, 5, 2, 5)
    for b in range(2):
        for o in range(5):
            row = grad(lambda t: soft(t)[b, o])(THETA)
            assert torch.allclose(jac[b, o], row, atol=1e-6)
    per_example = torch.stack([jacrev(soft)(x) for x in THETA[:, None]])
    assert torch.allclose(vmap(jacrev(soft))(THETA[:, None]), per_example, atol=1e-6)


# ----------------------------------------------------------- randomness


def test_same_seed_same_bits_and_other_seed_other_draws():
    def run(seed):
        theta = THETA.clone().requires_grad_(True)
        y = ptx.perturbed(argmax, num_samples=300, sigma=0.5, seed=seed)(theta)
        y[:, 1].sum().backward()
        return y.detach(), theta.grad

    y1, g1 = run(11)
    y2, g2 = run(11)
    y3, _ = run(12)
    assert torch.equal(y1, y2) and torch.equal(g1, g2)
    assert not torch.equal(y1, y3)
    largest = 2**64 - 1  # every seed torch accepts works, with both strategies
    for strategy in STRATEGIES:
        soft = ptx.perturbed(argmax, num_samples=50, sigma=0.5, seed=largest, strategy=strategy)
        assert grad(lambda t: soft(t)[:, 1].sum())(THETA).shape == THETA.shape


def test_global_rng_and_generator_make_runs_reproducible():
    soft = ptx.perturbed(argmax, num_samples=300, sigma=0.5)
    torch.manual_seed(0)
    a1, a2 = soft(THETA), soft(THETA)
    torch.manual_seed(0)
    b1, b2 = soft(THETA), soft(THETA)
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and not torch.equal(a1, a2)

    def with_generator():
        soft = ptx.perturbed(argmax, num_samples=300, sigma=0.5, generator=torch.Generator().manual_seed(3))
        return soft(THETA), soft(THETA)

    (c1, c2), (d1, d2) = with_generator(), with_generator()
    assert torch.equal(c1, d1) and torch.equal(c2, d2) and not torch.equal(c1, c2)
    state = torch.get_rng_state()
    ptx.perturbed(argmax, num_samples=10, seed=0)(THETA)
    assert torch.equal(torch.get_rng_state(), state)  # a seed leaves the global RNG alone


# -------------------------------------------------------------- memory


@pytest.mark.parametrize("strategy", ["auto", "jacobian", "recompute"])
def test_bytes_saved_for_backward_do_not_grow_with_num_samples(strategy):
    theta = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), device="cpu").to(DEVICE).requires_grad_(True)

    def saved_bytes(num_samples):
        return bytes_saved_for_backward(
            lambda: ptx.perturbed(argmax, num_samples=num_samples, sigma=0.5, seed=0, strategy=strategy)(theta)
        )

    small, large = saved_bytes(1_000), saved_bytes(100_000)
    assert small == large
    # θ, the seed, and for "jacobian" one (out, in) matrix per example.
    jacobian = 4 * 6 * 6 * 4 if strategy != "recompute" else 0
    assert large == 4 * 6 * 4 + 8 + jacobian


@pytest.mark.parametrize("strategy", ["jacobian", "recompute"])
def test_second_derivatives_raise_for_every_strategy(strategy):
    # The Monte-Carlo Jacobian estimate depends on theta: a second derivative that
    # treated it as a constant would be silently wrong, so both strategies refuse.
    theta = torch.tensor([[0.3, -0.2, 0.1]], requires_grad=True)
    f = ptx.perturbed(lambda x: torch.nn.functional.one_hot(x.argmax(-1), 3).float(),
                      num_samples=200, sigma=0.5, seed=0, strategy=strategy)
    (grad,) = torch.autograd.grad((f(theta) * torch.tensor([1.0, 2.0, 3.0])).sum(), theta, create_graph=True)
    with pytest.raises(NotImplementedError, match="second derivatives"):
        grad.sum().backward()


def test_an_empty_batch_gives_an_empty_output_and_gradient():
    theta = torch.zeros(0, 5, requires_grad=True)
    soft = ptx.perturbed_argmax(theta, num_samples=10, seed=0)
    assert soft.shape == (0, 5)
    soft.sum().backward()
    assert theta.grad is not None and theta.grad.shape == (0, 5)
    # a generic solver whose output differs from its input in shape
    first_two = ptx.perturbed(lambda x: x[..., :2].sign(), num_samples=10, seed=0)
    assert first_two(torch.zeros(0, 5)).shape == (0, 2)
