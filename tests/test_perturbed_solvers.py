"""Tests for ``perturbed_ranks``, ``perturbed_topk`` and ``perturbed_sort``.

Closed forms. With Gumbel noise the decreasing order of ``θ + σG`` is a
Plackett-Luce permutation with weights ``exp(θ / σ)``: ``π`` has probability
``Π_j exp(θ_{π_j}/σ) / Σ_{l >= j} exp(θ_{π_l}/σ)``. So the expected ranks, top-k
indicator and permutation matrix are finite sums over the ``n!`` permutations
(``n <= 5``), computed in float64, and autograd through them gives the exact
Jacobians. The expected sort is exact too: by the max-min identity of order
statistics, the k-th smallest of ``x`` is
``Σ_{|S| >= k} (-1)^{|S|-k} C(|S|-1, k-1) max_{i ∈ S} x_i``, and
``E[max_{i ∈ S} (θ_i + σG_i)] = σ logsumexp(θ_S / σ) + σγ``.
For normal noise the reference is an independent Monte-Carlo run (another
generator, its own solvers written here).

Tolerances are 5 standard errors of the Monte-Carlo means, the SE exact (from
the closed-form second moments, or a Bernoulli's ``p (1 - p)``) or bounded
(stated at each test); a mean of indicators also gets one sample's step
``1/N``, for entries whose probability is tiny. Every random call has a fixed
seed, so every outcome is deterministic.
"""

from __future__ import annotations

import inspect
import itertools
import math

import pytest
import torch
from torch.func import grad, jacrev, vmap

import paramtx as ptx
from ptx_testing import DEVICE, bytes_saved_for_backward

EULER_GAMMA = 0.5772156649015329
STRATEGIES = ["jacobian", "recompute"]
THETA5 = torch.tensor([[0.3, -1.0, 2.0, 0.5, 0.4], [1.0, 0.9, -0.2, 0.0, -2.0]], dtype=torch.float64, device=DEVICE)
THETA4 = torch.tensor([[0.3, -1.0, 1.2, 0.5], [0.6, 0.1, -0.4, 0.0]], dtype=torch.float64, device=DEVICE)
SOLVERS = {  # name: a function of θ and the options
    "ranks": ptx.perturbed_ranks,
    "topk": lambda theta, **options: ptx.perturbed_topk(theta, 2, **options),
    "sort": ptx.perturbed_sort,
}


# -------------------------------------------------------------- closed forms


def plackett_luce(theta: torch.Tensor, sigma: float) -> list[tuple[tuple[int, ...], torch.Tensor]]:
    """Every permutation of one list, largest first, with its Plackett-Luce probability."""
    logits = theta / sigma
    laws = []
    for perm in itertools.permutations(range(theta.shape[-1])):
        ordered = logits[list(perm)]
        log_p = sum(ordered[j] - torch.logsumexp(ordered[j:], 0) for j in range(len(perm)))
        laws.append((perm, torch.exp(log_p)))
    return laws


def ranks_of(perm: tuple[int, ...]) -> torch.Tensor:
    """0-based ascending ranks, for ``perm`` listing the entries from the largest."""
    n = len(perm)
    r = torch.zeros(n, dtype=torch.float64)
    r[list(perm)] = torch.arange(n - 1, -1, -1, dtype=torch.float64)
    return r


def top_k_of(perm: tuple[int, ...], k: int) -> torch.Tensor:
    y = torch.zeros(len(perm), dtype=torch.float64)
    y[list(perm[:k])] = 1.0
    return y


def permutation_matrix_of(perm: tuple[int, ...]) -> torch.Tensor:
    """``P`` with ``sort(x) = P x`` (ascending): position i holds entry ``perm[n - 1 - i]``."""
    n = len(perm)
    p = torch.zeros(n, n, dtype=torch.float64)
    p[torch.arange(n), torch.tensor(perm[::-1])] = 1.0
    return p


def exact_mean(theta: torch.Tensor, sigma: float, solution) -> torch.Tensor:
    """``E[solution(perm)]`` under Plackett-Luce, for each list of ``θ`` (B, n)."""
    return torch.stack([sum(p * solution(perm) for perm, p in plackett_luce(row, sigma)) for row in theta])


def exact_sort(theta: torch.Tensor, sigma: float) -> torch.Tensor:
    """``E[sort(θ + σG)]`` (ascending) of each list of ``θ`` (B, n), by the max-min identity."""
    rows = []
    for row in theta:
        n = row.shape[-1]
        expected_max = {
            subset: sigma * torch.logsumexp(row[list(subset)] / sigma, 0) + sigma * EULER_GAMMA
            for size in range(1, n + 1) for subset in itertools.combinations(range(n), size)
        }
        rows.append(torch.stack([
            sum((-1) ** (len(s) - k) * math.comb(len(s) - 1, k - 1) * m for s, m in expected_max.items() if len(s) >= k)
            for k in range(1, n + 1)
        ]))
    return torch.stack(rows)


def exact_jacobian(function, theta: torch.Tensor) -> torch.Tensor:
    """``d function(θ)[b, i] / dθ[b, j]`` (B, n, n) of a function acting on each list alone."""
    return torch.stack([torch.autograd.functional.jacobian(lambda r: function(r[None])[0], row) for row in theta])


def bernoulli_tolerance(p: torch.Tensor, n: int) -> torch.Tensor:
    """5 SE of a mean of n indicators of probability p, plus one sample's step."""
    return 5 * torch.sqrt(p * (1 - p) / n) + 1.0 / n


def test_the_closed_forms_agree_with_each_other():
    # The max-min identity's expected sort has the expected permutation matrix as
    # its Jacobian (the pathwise gradient), and the sort at E[P] recovers the ranks:
    # E[P]ᵀ (0, ..., n-1) = E[ranks].
    sigma = 0.7
    p = exact_mean(THETA4, sigma, permutation_matrix_of)
    assert torch.allclose(exact_jacobian(lambda t: exact_sort(t, sigma), THETA4), p, atol=1e-10)
    w = torch.arange(4, dtype=torch.float64)
    assert torch.allclose(w @ p, exact_mean(THETA4, sigma, ranks_of), atol=1e-12)
    # k = 1 is softmax; the sort's largest entry is sigma * logsumexp + sigma * gamma.
    softmax = torch.softmax(THETA4 / sigma, -1)
    assert torch.allclose(exact_mean(THETA4, sigma, lambda perm: top_k_of(perm, 1)), softmax, atol=1e-12)
    top = sigma * torch.logsumexp(THETA4 / sigma, -1) + sigma * EULER_GAMMA
    assert torch.allclose(exact_sort(THETA4, sigma)[:, -1], top, atol=1e-12)
    # A Monte-Carlo check of the identity on order statistics that are not the max.
    u = torch.rand(400_000, 4, dtype=torch.float64, generator=torch.Generator(device="cpu").manual_seed(0), device="cpu")
    g = -torch.log(-torch.log(u.clamp_min(1e-300))).to(THETA4.device)
    mc = torch.sort(THETA4[0] + sigma * g, -1).values
    # Efron-Stein: an order statistic of independent X_i has variance <= Σ Var X_i.
    assert torch.all((mc.mean(0) - exact_sort(THETA4[:1], sigma)[0]).abs() <= 5 * math.sqrt(4 * sigma**2 * math.pi**2 / 6 / 400_000))


# ------------------------------------------------------- values, Gumbel noise


@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_gumbel_soft_ranks_are_the_plackett_luce_expected_ranks(sigma):
    n = 100_000
    out = ptx.perturbed_ranks(THETA5.float(), num_samples=n, sigma=sigma, seed=0)
    mean = exact_mean(THETA5, sigma, ranks_of)
    variance = exact_mean(THETA5, sigma, lambda perm: ranks_of(perm) ** 2) - mean**2
    assert torch.all((out.double() - mean).abs() <= 5 * torch.sqrt(variance / n) + 1e-5)  # + float32 rounding
    assert torch.allclose(out.sum(-1), torch.full((2,), 10.0))  # 0 + 1 + 2 + 3 + 4 in every draw


@pytest.mark.parametrize("k", [1, 2, 4])
def test_gumbel_soft_top_k_is_the_plackett_luce_probability_of_being_among_the_first_k(k):
    n, sigma = 100_000, 0.8
    out = ptx.perturbed_topk(THETA5.float(), k, num_samples=n, sigma=sigma, seed=1)
    p = exact_mean(THETA5, sigma, lambda perm: top_k_of(perm, k))
    assert torch.all((out.double() - p).abs() <= bernoulli_tolerance(p, n))
    assert torch.allclose(out.sum(-1), torch.full((2,), float(k)))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gumbel_soft_sort_and_its_jacobian_are_exact_expectations(strategy):
    n, sigma = 100_000, 0.6
    theta = THETA4.float()
    f = lambda t: ptx.perturbed_sort(t, num_samples=n, sigma=sigma, noise="gumbel", seed=2, strategy=strategy)
    out = f(theta)
    # Efron-Stein: Var(k-th order statistic) <= Σ_i Var(θ_i + σG_i) = 4 σ² π²/6.
    se = math.sqrt(4 * sigma**2 * math.pi**2 / 6 / n)
    assert torch.all((out.double() - exact_sort(THETA4, sigma)).abs() <= 5 * se)
    # The Jacobian: per list an (n, n) mean of permutation matrices, entry by entry a mean of indicators.
    jac = jacrev(f)(theta)  # (B, n, B, n)
    per_list = torch.stack([jac[b, :, b] for b in range(2)]).double()
    p = exact_mean(THETA4, sigma, permutation_matrix_of)
    assert torch.all((per_list - p).abs() <= bernoulli_tolerance(p, n))
    assert torch.all(jac[0, :, 1] == 0) and torch.all(jac[1, :, 0] == 0)  # lists do not mix
    ones = torch.ones(2, 4)
    assert torch.allclose(per_list.sum(-1).float(), ones) and torch.allclose(per_list.sum(-2).float(), ones)


@pytest.mark.parametrize("control_variate", [True, False])
@pytest.mark.parametrize("solver", ["ranks", "topk"])
def test_gumbel_jacobians_of_the_linear_program_solvers_match_the_exact_ones(solver, control_variate):
    """The score-function estimate of d E[f] / dθ against autograd through the enumeration.

    Each entry is a mean of ``f_i s_j / σ`` with ``E[s_j²] = 1`` for Gumbel's
    score; with or without a baseline, ``f_i`` (less its baseline) lies in an
    interval of length ``span`` (3 for ranks of 4, 1 for an indicator), so
    ``SE <= span / (σ √N)``.
    """
    n, sigma, k = 200_000, 1.0, 2
    if solver == "ranks":
        f = lambda t: ptx.perturbed_ranks(t, num_samples=n, sigma=sigma, seed=3, control_variate=control_variate)
        exact = lambda t: exact_mean(t, sigma, ranks_of)
        span = 3.0
    else:
        f = lambda t: ptx.perturbed_topk(t, k, num_samples=n, sigma=sigma, seed=3, control_variate=control_variate)
        exact = lambda t: exact_mean(t, sigma, lambda perm: top_k_of(perm, k))
        span = 1.0
    jac = jacrev(f)(THETA4.float())
    per_list = torch.stack([jac[b, :, b] for b in range(2)]).double()
    assert torch.all(jac[0, :, 1] == 0) and torch.all(jac[1, :, 0] == 0)  # each list is its own example
    expected = exact_jacobian(exact, THETA4)
    tolerance = 5 * span / (sigma * math.sqrt(n))
    assert torch.all((per_list - expected).abs() <= tolerance)
    assert expected.abs().max() > 5 * tolerance  # the check is not vacuous


# -------------------------------------------------------- values, normal noise


NORMAL_REFERENCE_DRAWS, NORMAL_SIGMA = 400_000, 0.7


@pytest.fixture(scope="module")
def normal_reference():
    """Independent draws of the three solvers on ``THETA4 + σZ`` (float32), and the frequencies of P."""
    theta, k = THETA4.float(), 2
    generator = torch.Generator(device="cpu").manual_seed(123)
    z = torch.randn(NORMAL_REFERENCE_DRAWS, *theta.shape, generator=generator, device="cpu").to(theta.device)
    x = theta + NORMAL_SIGMA * z
    values, order = torch.sort(x, -1)
    samples = {
        "ranks": torch.argsort(torch.argsort(x, -1), -1).float(),
        "topk": (x >= values[..., -k:-k + 1]).float(),
        "sort": values,
    }
    p_ref = torch.nn.functional.one_hot(order, 4).float().mean(0)  # (B, n, n): [b, i, j] = P(j in position i)
    return samples, p_ref


@pytest.mark.parametrize("antithetic", [False, True])
def test_normal_noise_solvers_agree_with_an_independent_monte_carlo_reference(normal_reference, antithetic):
    """Reference: 400k draws from another generator, through solvers written here.

    Each comparison is of two independent means; the tolerance is 5 SE of their
    difference, ``sqrt(v / n + v / n_ref)``, with ``v`` the reference sample's
    variance (400k draws pin it to about 0.5%), plus one sample's step. With
    antithetic pairs the n draws are n/2 independent pair means, each of
    variance at most v (Cauchy-Schwarz), so the SE is at most ``sqrt(2 v / n)``.
    """
    n, n_ref, sigma, k = 200_000, NORMAL_REFERENCE_DRAWS, NORMAL_SIGMA, 2
    inflation = 2 if antithetic else 1
    theta = THETA4.float()
    reference, p_ref = normal_reference
    options = dict(num_samples=n, sigma=sigma, noise="normal", seed=4, antithetic=antithetic)
    out = {
        "ranks": ptx.perturbed_ranks(theta, **options),
        "topk": ptx.perturbed_topk(theta, k, **options),
        "sort": ptx.perturbed_sort(theta, **options),
    }
    for name, sample in reference.items():
        se = torch.sqrt(inflation * sample.var(0) / n + sample.var(0) / n_ref)
        assert torch.all((out[name] - sample.mean(0)).abs() <= 5 * se + 1.0 / n), name
    # The sort's Jacobian: E[P], against the reference's permutation frequencies.
    jac = jacrev(lambda t: ptx.perturbed_sort(t, **options))(theta)
    per_list = torch.stack([jac[b, :, b] for b in range(2)])
    se = torch.sqrt(p_ref * (1 - p_ref) * (inflation / n + 1 / n_ref))
    assert torch.all((per_list - p_ref).abs() <= 5 * se + 1.0 / n)


# ------------------------------------------------------------ identities


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("noise", ["gumbel", "normal"])
def test_the_soft_sorts_gradient_against_0_to_n_minus_1_is_the_soft_ranks_draw_for_draw(noise, strategy):
    # ranks(x) = P(x)ᵀ (0, ..., n-1): with the same seed, the same draws give the same mean.
    theta = THETA5.float()
    options = dict(num_samples=3_000, sigma=0.5, noise=noise, seed=5)
    w = torch.arange(5.0)
    through_sort = grad(lambda t: (ptx.perturbed_sort(t, **options, strategy=strategy) * w).sum())(theta)
    assert torch.allclose(through_sort, ptx.perturbed_ranks(theta, **options), atol=1e-5)


def test_a_tiny_sigma_gives_the_hard_solutions():
    theta = THETA5.float()
    options = dict(num_samples=20, sigma=1e-6, seed=0)
    hard_ranks = torch.argsort(torch.argsort(theta, -1), -1).float()
    assert torch.equal(ptx.perturbed_ranks(theta, **options), hard_ranks)
    assert torch.equal(ptx.perturbed_topk(theta, 2, **options), (hard_ranks >= 3).float())
    assert torch.allclose(ptx.perturbed_sort(theta, **options), torch.sort(theta, -1).values, atol=1e-5)


def test_k_zero_and_k_n_are_the_empty_and_the_full_selection():
    theta = THETA5.float()
    assert torch.equal(ptx.perturbed_topk(theta, 0, num_samples=50, seed=0), torch.zeros(2, 5))
    assert torch.equal(ptx.perturbed_topk(theta, 5, num_samples=50, seed=0), torch.ones(2, 5))


# ---------------------------------------------------- shapes, batching, vmap


@pytest.mark.parametrize("name", SOLVERS)
def test_every_leading_dim_holds_independent_lists(name):
    solver = SOLVERS[name]
    theta = torch.randn(2, 3, 5, generator=torch.Generator(device="cpu").manual_seed(0), device="cpu").to(THETA5.device)
    options = dict(num_samples=200, sigma=0.5, seed=6)
    out = solver(theta, **options)
    assert out.shape == (2, 3, 5)
    assert torch.equal(out, solver(theta.reshape(6, 5), **options).reshape(2, 3, 5))
    one = solver(theta[0, 0], **options)  # a 1-D θ is one list
    assert one.shape == (5,) and torch.equal(one, solver(theta[0, :1], **options)[0])
    # channels-last-like and transposed layouts: same lists, same draws
    assert torch.equal(solver(theta.transpose(0, 1).contiguous().transpose(0, 1), **options), out)


@pytest.mark.parametrize("name", SOLVERS)
def test_empty_inputs_and_lists_of_one(name):
    solver = SOLVERS[name]
    options = dict(num_samples=10, seed=0)
    for shape in [(0, 5), (3, 0)]:
        theta = torch.zeros(shape, requires_grad=True)
        out = solver(theta, **options) if name != "topk" else ptx.perturbed_topk(theta, 0, **options)
        out.sum().backward()
        assert out.shape == shape and theta.grad.shape == shape
    theta = torch.tensor([[0.5], [-2.0]])  # one score per list: rank 0, in the top 1, sorted as it is
    expected = {"ranks": torch.zeros(2, 1), "topk": torch.ones(2, 1)}
    if name == "sort":
        assert torch.allclose(grad(lambda t: solver(t, **options).sum())(theta), torch.ones(2, 1))
    else:
        out = solver(theta, **options) if name == "ranks" else ptx.perturbed_topk(theta, 1, **options)
        assert torch.equal(out, expected[name])


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", SOLVERS)
def test_vmap_and_grad_equal_a_loop_over_examples(name, strategy):
    solver = SOLVERS[name]
    f = lambda t: solver(t, num_samples=300, sigma=0.5, seed=7, strategy=strategy)
    stacked = THETA5.float()[None].expand(3, 2, 5) + torch.linspace(0, 1, 3)[:, None, None]
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0])
    loss = lambda t: (f(t) * w).sum()
    assert torch.allclose(vmap(f)(stacked), torch.stack([f(x) for x in stacked]), atol=1e-6)
    looped = torch.stack([grad(loss)(x) for x in stacked])
    assert torch.allclose(vmap(grad(loss))(stacked), looped, atol=1e-5)
    theta = stacked[0].clone().requires_grad_(True)
    loss(theta).backward()
    assert torch.allclose(theta.grad, looped[0], atol=1e-6)  # autograd == torch.func.grad


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sort_jacrev_equals_one_vjp_per_output(strategy):
    f = lambda t: ptx.perturbed_sort(t, num_samples=300, sigma=0.5, seed=8, strategy=strategy)
    theta = THETA4.float()
    jac = jacrev(f)(theta)
    for b, i in itertools.product(range(2), range(4)):
        assert torch.allclose(jac[b, i], grad(lambda t: f(t)[b, i])(theta), atol=1e-6)


@pytest.mark.parametrize("name", SOLVERS)
def test_randomness_is_perturbeds_seed_generator_or_global_rng(name):
    solver = SOLVERS[name]
    theta = THETA5.float()
    options = dict(num_samples=100, sigma=0.5)
    torch.manual_seed(0)
    a1, a2 = solver(theta, **options), solver(theta, **options)
    torch.manual_seed(0)
    assert torch.equal(solver(theta, **options), a1) and not torch.equal(a1, a2)
    runs = [solver(theta, generator=torch.Generator(device="cpu").manual_seed(3), **options) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    state = torch.get_rng_state()
    solver(theta, seed=1, device="cpu", **options)
    assert torch.equal(torch.get_rng_state(), state)  # a seed leaves the global RNG alone


# --------------------------------------------------------- dtypes, NaN


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("name", SOLVERS)
def test_dtype_in_is_dtype_out_with_float32_or_wider_work(name, dtype):
    # θ holds values exact in every dtype, so the draws and solutions are those of
    # float32 (the work dtype of half precision); only the result is rounded.
    solver = SOLVERS[name]
    theta32 = torch.tensor([[0.25, -1.0, 2.0, 0.5, 0.375]])
    options = dict(num_samples=500, sigma=0.5, seed=9)
    theta = theta32.to(dtype).requires_grad_(True)
    out = solver(theta, **options)
    assert out.dtype == dtype
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0])
    (out * w.to(dtype)).sum().backward()
    assert theta.grad.dtype == dtype
    theta32.requires_grad_(True)
    out32 = solver(theta32, **options)
    (out32 * w).sum().backward()
    if dtype == torch.float64:  # float64 works in float64: other draws, same law
        assert torch.all(torch.isfinite(out)) and torch.all(torch.isfinite(theta.grad))
        return
    assert torch.equal(out, out32.to(dtype))
    # The gradient is wᵀ J with J the float32 estimate rounded to the dtype (w is
    # exact in it): each J entry is off by <= eps/2 relatively, the n-term sum,
    # accumulated at worst in the dtype, adds <= n eps/2 of Σ|w_i J_ij|, and the
    # result's rounding eps/2 of it: (n + 1) eps Σ_i |w_i| |J_ij| bounds the gap.
    eps = torch.finfo(dtype).eps
    jac32 = jacrev(lambda t: solver(t, **options))(theta32.detach())[0, :, 0]  # (n, n)
    bound = (5 + 1) * eps * (w.abs() @ jac32.abs())
    assert torch.all((theta.grad.float() - theta32.grad).abs() <= bound)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", SOLVERS)
def test_a_non_finite_list_gives_nan_and_the_others_stay_finite(name, strategy):
    solver = SOLVERS[name]
    for bad in (float("nan"), float("inf")):
        theta = THETA5.float().clone()
        theta[1, 2] = bad
        theta.requires_grad_(True)
        out = solver(theta, num_samples=200, sigma=0.5, seed=0, strategy=strategy)
        out.sum().backward()
        assert torch.all(torch.isnan(out[1])) and torch.all(torch.isnan(theta.grad[1]))
        assert torch.all(torch.isfinite(out[0])) and torch.all(torch.isfinite(theta.grad[0]))


# --------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda t: ptx.perturbed_topk(t, 6), ValueError, r"perturbed_topk: k must satisfy 0 <= k <= n = 5 .*got 6"),
        (lambda t: ptx.perturbed_topk(t, -1), ValueError, r"perturbed_topk: k must satisfy k >= 0, got -1"),
        (lambda t: ptx.perturbed_topk(t, 2.0), TypeError, r"perturbed_topk: k must be an int, got 2.0"),
        (lambda t: ptx.perturbed_topk(t, True), TypeError, r"perturbed_topk: k must be an int, got True"),
        (lambda t: ptx.perturbed_ranks(t[0, 0]), ValueError, r"perturbed_ranks: theta must have at least one dim.*shape \(\)"),
        (lambda t: ptx.perturbed_sort(t[0, 0]), ValueError, r"perturbed_sort: theta must have at least one dim.*shape \(\)"),
        (lambda t: ptx.perturbed_topk(t[0, 0], 1), ValueError, r"perturbed_topk: theta must have at least one dim"),
        (lambda t: ptx.perturbed_sort(t.long()), TypeError, r"perturbed_sort: theta must be a floating-point tensor, got dtype torch.int64"),
        (lambda t: ptx.perturbed_ranks(t.tolist()), TypeError, r"perturbed_ranks: theta must be a tensor, got list"),
        (lambda t: ptx.perturbed_sort(t, noise="cauchy"), ValueError, r"perturbed_sort: noise must be one of .*got 'cauchy'"),
        (lambda t: ptx.perturbed_ranks(t, sigma=0.0), ValueError, r"perturbed_ranks: sigma must satisfy 0 < sigma, got 0.0"),
        (lambda t: ptx.perturbed_topk(t, 1, num_samples=0), ValueError, r"perturbed_topk: num_samples must satisfy num_samples >= 1, got 0"),
        (lambda t: ptx.perturbed_sort(t, strategy="cache"), ValueError, r"perturbed_sort: strategy must be one of .*got 'cache'"),
        (lambda t: ptx.perturbed_sort(t, noise="gumbel", antithetic=True), ValueError, r"perturbed_sort: antithetic=True needs noise='normal'"),
        (lambda t: ptx.perturbed_ranks(t, antithetic=True), ValueError, r"perturbed_ranks: antithetic=True needs noise='normal'.*got noise='gumbel'"),
        (lambda t: ptx.perturbed_topk(t, 1, control_variate=1), TypeError, r"perturbed_topk: control_variate must be a bool, got 1"),
    ],
)
def test_bad_input_raises_naming_the_api_the_argument_and_the_value(call, error, message):
    with pytest.raises(error, match=message):
        call(THETA5.float())


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", SOLVERS)
def test_second_derivatives_raise(name, strategy):
    # The Jacobian estimate depends on θ; treating it as constant would be silently wrong.
    solver = SOLVERS[name]
    theta = THETA5.float().requires_grad_(True)
    out = solver(theta, num_samples=100, sigma=0.5, seed=0, strategy=strategy)
    (g,) = torch.autograd.grad((out * torch.arange(5.0)).sum(), theta, create_graph=True)
    with pytest.raises(NotImplementedError, match="second derivatives"):
        g.sum().backward()


def test_the_solvers_take_every_option_of_perturbed_with_its_defaults():
    # batched has no meaning here (every leading dim holds lists); the sort's pathwise
    # gradient has no score term for a control variate to centre.
    from paramtx._perturbations.entry import OPTIONS

    reference = inspect.signature(ptx.perturbed).parameters
    own_defaults = {"sigma", "noise"}  # the solvers' own scale and noise (see their docstrings)
    for solver, not_taken in [
        (ptx.perturbed_ranks, {"batched"}),
        (ptx.perturbed_topk, {"batched"}),
        (ptx.perturbed_sort, {"batched", "control_variate"}),
    ]:
        parameters = inspect.signature(solver).parameters
        assert set(OPTIONS) - not_taken <= set(parameters), solver.__name__
        assert not (not_taken & set(parameters)), solver.__name__
        for name in set(OPTIONS) - not_taken - own_defaults:
            assert parameters[name].default == reference[name].default, (solver.__name__, name)
            assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY


# ------------------------------------------------------------------ memory


@pytest.mark.parametrize("strategy", ["auto", "jacobian", "recompute"])
def test_the_sort_saves_for_backward_bytes_that_do_not_grow_with_num_samples(strategy):
    theta = THETA5.float().requires_grad_(True)

    def saved_bytes(num_samples):
        return bytes_saved_for_backward(
            lambda: ptx.perturbed_sort(theta, num_samples=num_samples, sigma=0.5, seed=0, strategy=strategy)
        )

    small, large = saved_bytes(1_000), saved_bytes(100_000)
    assert small == large
    # θ (2 x 5 float32), the seed, and for "jacobian" one (5, 5) E[P] per list.
    expected_permutations = 2 * 5 * 5 * 4 if strategy != "recompute" else 0
    assert large == 2 * 5 * 4 + 8 + expected_permutations
