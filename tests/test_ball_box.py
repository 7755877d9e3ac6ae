"""Projections onto an Lp ball intersected with a box, onto the simplex and onto Lp balls (1 < p < inf).

Properties on random shapes, dtypes, budgets and boxes: the result lies in the
set, is a fixed point of the projection, leaves points of the set unchanged,
and is the nearest point, checked against float64 oracles written here by plain
bisection (independent of the library's search); per-datum tensor budgets and
bounds equal a loop over the data with numbers; empty intersections raise.
The conformance battery (``ops_registry.py``) covers the ops' dtypes, layouts,
NaN policy and paths with number settings.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import paramtx as ptx

# Rounding: results are computed in float64 and rounded towards zero into the data's
# dtype, so norms come out at most the float64 value; that value is on the sphere
# within a few float64 ulps times the sum's length. Relative slack:
IN_BALL = {torch.float32: 1e-6, torch.float64: 1e-12}
# Distance to the oracle, relative to the datum's largest magnitude, in or out: one
# rounding of the data's dtype (2**-24, 2**-53) with room for the search's last bracket
# (a threshold near |x| leaves |x| - theta with the absolute rounding of |x|).
CLOSE = {torch.float32: 3e-7, torch.float64: 1e-12}

dtypes = st.sampled_from([torch.float32, torch.float64])


def _data(draw, dtype):
    n = draw(st.integers(1, 3))
    d = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([1e-3, 0.3, 1.0, 5.0, 1e3]))
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) * scale).to(dtype)
    # a box holding 0 (the adversarial case: x0 + delta in [0, 1]) or, sometimes, not
    x0 = torch.rand(n, d, generator=g, dtype=torch.float64)
    lower, upper = (-x0).to(dtype), (1 - x0).to(dtype)
    if draw(st.booleans()):
        shift = draw(st.sampled_from([0.05, -0.05]))
        lower, upper = (lower.double() * 0.1 + shift).to(dtype), (upper.double() * 0.1 + shift).to(dtype)
    return x, lower, upper


@st.composite
def cases(draw):
    dtype = draw(dtypes)
    x, lower, upper = _data(draw, dtype)
    epsilon = draw(st.sampled_from([0.05, 0.4, 1.0, 3.0]))
    return x, lower, upper, epsilon


# ----------------------------------------------------------------------------- float64 oracles


def _bisect(true_at_low, low: float, high: float, steps: int = 120) -> float:
    for _ in range(steps):
        mid = (low + high) / 2
        low, high = (mid, high) if true_at_low(mid) else (low, mid)
    return low


def oracle_l2_box(x, epsilon, lower, upper):
    """Per datum: clamp(t x), t the largest in [0, 1] inside the ball (plain bisection in float64)."""
    out = []
    for row, lo, hi in zip(x.double(), lower.double(), upper.double()):
        point = lambda t: torch.maximum(torch.minimum(row * t, hi), lo)  # noqa: E731
        if float(point(1.0).norm()) <= epsilon:
            out.append(point(1.0))
            continue
        out.append(point(_bisect(lambda t: float(point(t).norm()) <= epsilon, 0.0, 1.0)))
    return torch.stack(out)


def oracle_l1_box(x, epsilon, lower, upper):
    """Per datum: clamp(soft(x, theta)), theta the smallest >= 0 inside the ball."""
    out = []
    for row, lo, hi in zip(x.double(), lower.double(), upper.double()):
        point = lambda th: torch.maximum(torch.minimum(torch.sign(row) * (row.abs() - th).clamp(min=0), hi), lo)  # noqa: E731
        if float(point(0.0).abs().sum()) <= epsilon:
            out.append(point(0.0))
            continue
        top = float(row.abs().max())
        out.append(point(top - _bisect(lambda s: float(point(top - s).abs().sum()) <= epsilon, 0.0, top)))
    return torch.stack(out)


def oracle_lp(row: torch.Tensor, p: float, epsilon: float) -> torch.Tensor:
    """One datum: y = sign(x) g, g + c g^(p-1) = |x| (inner bisection), c bisected on ||g||_p = epsilon."""
    a = row.double().abs()
    if float((a**p).sum() ** (1 / p)) <= epsilon:
        return row.double()

    def magnitudes(log_c: float) -> torch.Tensor:
        low, high = torch.zeros_like(a), a.clone()
        for _ in range(60):  # 2**-60 of |x|
            mid = (low + high) / 2
            below = mid + math.exp(log_c) * mid ** (p - 1) < a
            low, high = torch.where(below, mid, low), torch.where(below, high, mid)
        return (low + high) / 2

    log_c = _bisect(lambda s: float((magnitudes(s) ** p).sum()) > epsilon**p, -300.0, 300.0, steps=64)
    return torch.sign(row.double()) * magnitudes(log_c)


def _assert_close(got, want, dtype, x=None):
    scale = max(float(want.abs().max()), 0.0 if x is None else float(x.abs().max()), 1e-300)
    assert float((got.double() - want).abs().max()) <= CLOSE[dtype] * scale, (got, want)


# ----------------------------------------------------------------------------- L2 and L1 ball ∩ box


PROJECTIONS = {
    "l2": (ptx.project_l2_ball, oracle_l2_box, 2.0),
    "l1": (ptx.project_l1_ball, oracle_l1_box, 1.0),
}


def _norm(y: torch.Tensor, p: float) -> torch.Tensor:
    return torch.linalg.vector_norm(y.double(), ord=p, dim=-1)


@pytest.mark.parametrize("name", PROJECTIONS)
@settings(max_examples=25, deadline=None)
@given(case=cases())
def test_ball_box_projection_is_the_nearest_point_of_the_set(name, case):
    project, oracle, p = PROJECTIONS[name]
    x, lower, upper, epsilon = case
    nearest = torch.maximum(lower.double(), torch.zeros(())) + torch.maximum(-upper.double(), torch.zeros(()))
    empty = _norm(nearest, p) > epsilon  # the box's point nearest 0 is outside the ball
    if bool(empty.any()):
        # tensor bounds are not read on the host: those data come out as NaNs, the others are fine
        y = project(x, epsilon, lower=lower, upper=upper)
        assert bool(y[empty].isnan().all()) and not bool(y[~empty].isnan().any())
        return
    y = project(x, epsilon, lower=lower, upper=upper)
    assert y.dtype == x.dtype and y.shape == x.shape
    # in the set: the box exactly (bounds in the data's dtype), the ball within rounding
    assert bool(((y >= lower) & (y <= upper)).all())
    assert bool((_norm(y, p) <= epsilon * (1 + IN_BALL[x.dtype])).all())
    # the nearest point: the oracle's (KKT, by an independent search)
    _assert_close(y, oracle(x, epsilon, lower, upper), x.dtype, x)
    # a fixed point: projecting again changes nothing beyond rounding
    _assert_close(project(y, epsilon, lower=lower, upper=upper), y.double(), x.dtype)
    # a point of the set is returned unchanged, bit for bit
    inside = project(y * 0.5, epsilon, lower=lower * 0.5, upper=upper * 0.5)
    assert torch.equal(inside, y * 0.5)


@pytest.mark.parametrize("name", PROJECTIONS)
def test_far_outside_a_small_ball_the_result_is_in_the_ball_to_the_rounding_of_the_radius(name):
    # |x| - theta rounds at the scale of |x| (here ~1e3, ulp ~2e-13), the radius is 0.05: the
    # result must still be in the ball to a few ulps of the radius, not of |x|
    project, _, p = PROJECTIONS[name]
    g = torch.Generator().manual_seed(11)
    x = torch.randn(512, 3, generator=g, dtype=torch.float64) * 1e3
    x[0] = torch.tensor([1540.9961, -293.4289, -2178.7894], dtype=torch.float64)  # a case once 3.6e-12 out
    lower = -torch.rand(512, 3, generator=g, dtype=torch.float64)
    upper = 1 + lower
    y = project(x, 0.05, lower=lower, upper=upper)
    assert bool((_norm(y, p) <= 0.05 * (1 + IN_BALL[torch.float64])).all())
    assert bool(((y >= lower) & (y <= upper)).all())


@pytest.mark.parametrize("name", PROJECTIONS)
@settings(max_examples=15, deadline=None)
@given(case=cases())
def test_per_datum_budgets_and_bounds_equal_a_loop_over_data_with_numbers(name, case):
    project, _, p = PROJECTIONS[name]
    x, lower, upper, _ = case
    lower, upper = torch.minimum(lower, torch.zeros(())), torch.maximum(upper, torch.zeros(()))  # hold 0: nonempty
    radii = torch.linspace(0.05, 2.0, x.shape[0], dtype=torch.float64)
    batched = project(x, radii, lower=lower, upper=upper)
    for i in range(x.shape[0]):
        one = project(x[i], float(radii[i]), param_ndim=None, lower=lower[i], upper=upper[i])
        assert torch.equal(batched[i], one)
    # number bounds equal tensors of that number
    torch.testing.assert_close(
        project(x, 0.7, lower=-0.25, upper=0.5),
        project(x, 0.7, lower=torch.full_like(x, -0.25), upper=torch.full_like(x, 0.5)),
        rtol=0, atol=0,
    )


@pytest.mark.parametrize("name", PROJECTIONS)
def test_vmap_over_data_equals_the_rows_and_compiles_without_graph_breaks(name):
    # (the conformance battery compiles every op with number settings; here tensor settings)
    project, _, _ = PROJECTIONS[name]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 5, generator=g)
    x0 = torch.rand(4, 3, 5, generator=g)
    radii = torch.tensor([0.1, 0.5, 1.0, 4.0])
    rows = project(x, radii, lower=-x0, upper=1 - x0)
    assert bool((_norm(rows.flatten(1), PROJECTIONS[name][2]) <= radii * (1 + 1e-6)).all())
    mapped = torch.func.vmap(lambda xi, e, lo, hi: project(xi, e, param_ndim=None, lower=lo, upper=hi))(x, radii, -x0, 1 - x0)
    torch.testing.assert_close(mapped, rows, rtol=0, atol=0)
    if name != "l1":  # (one compile is enough to show no graph break; each takes seconds)
        return
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, e, lo, hi: project(x, e, lower=lo, upper=hi), backend="aot_eager", fullgraph=True)
    # compiled reductions may be ordered differently: within float32 rounding of the radius
    torch.testing.assert_close(compiled(x, radii, -x0, 1 - x0), rows, rtol=0, atol=1e-6)


def test_box_not_holding_zero_and_ball_box_beats_project_then_clamp():
    x = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    upper = torch.tensor([[0.3, 5.0]], dtype=torch.float64)
    y = ptx.project_l2_ball(x, 1.0, upper=upper)
    naive = ptx.project_l2_ball(x, 1.0).clamp(max=upper)  # what clamping after the ball gives
    assert float((y - x).norm()) < float((naive - x).norm())
    torch.testing.assert_close(y, torch.tensor([[0.3, math.sqrt(1 - 0.09)]], dtype=torch.float64))
    # a box away from 0: [0.1, 0.5] per element, in reach of the ball
    z = ptx.project_l1_ball(torch.tensor([[-1.0, 2.0, 0.05]]), 1.0, lower=0.1, upper=0.5)
    torch.testing.assert_close(z, torch.tensor([[0.1, 0.5, 0.1]]))


def test_linf_ball_box_is_a_clamp_into_the_intersected_box():
    x = torch.tensor([[2.0, -0.5, -3.0, 0.2]])
    y = ptx.project_linf_ball(x, 1.0, lower=torch.tensor([-0.25, -0.25, -2.0, 0.5]), upper=0.75)
    assert torch.equal(y, torch.tensor([[0.75, -0.25, -1.0, 0.5]]))
    # per datum radius with per element bounds
    y = ptx.project_linf_ball(torch.full((2, 3), 5.0), torch.tensor([1.0, 2.0]), upper=torch.tensor([1.5, 3.0, 0.5]))
    assert torch.equal(y, torch.tensor([[1.0, 1.0, 0.5], [1.5, 2.0, 0.5]]))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x: ptx.project_l2_ball(x, 1.0, lower=0.5, upper=0.2), "project_l2_ball: lower must satisfy lower <= upper"),
        (lambda x: ptx.project_l2_ball(x, 1.0, lower=0.5), "project_l2_ball: the ball of radius epsilon=1.0"),
        (lambda x: ptx.project_l1_ball(x, 1.0, upper=-0.3), "project_l1_ball: the ball of radius epsilon=1.0"),
        (lambda x: ptx.project_linf_ball(x, 0.1, lower=0.2), "project_linf_ball: the ball of radius epsilon=0.1"),
        (lambda x: ptx.project_l1_ball(x, 1.0, lower="a"), "project_l1_ball: lower must be a real number"),
    ],
)
def test_empty_intersections_and_bad_bounds_raise(call, message):
    # data of 5 elements: the box's point nearest 0 has L2 norm 0.5 * 5**0.5 > 1, L1 norm 1.5 > 1
    with pytest.raises((ValueError, TypeError), match=message):
        call(torch.zeros(2, 5))


def test_empty_intersections_with_tensor_settings_give_nan_data():
    x = torch.ones(2, 4)
    y = ptx.project_l2_ball(x, torch.tensor([0.5, 2.0]), lower=torch.full((2, 4), 0.5))
    # datum 0: the box's nearest point has norm 1 > 0.5 (empty); datum 1 is fine
    assert bool(y[0].isnan().all()) and torch.equal(y[1], torch.ones(4))
    y = ptx.project_l1_ball(x, 1.0, lower=torch.tensor([0.0, 0.0, 0.0, 0.0]), upper=torch.tensor([1.0, -1.0, 1.0, 1.0]))
    assert bool(y.isnan().all())  # lower > upper in some element of each datum


def test_ball_box_gradient_is_the_implicit_derivative():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, generator=g, dtype=torch.float64) * 2
    w = torch.randn(3, 6, generator=g, dtype=torch.float64)
    for project in (
        lambda x: ptx.project_l2_ball(x, 1.0, lower=-0.5, upper=0.6),
        lambda x: ptx.project_l1_ball(x, 1.0, lower=-0.35, upper=0.3),
        lambda x: ptx.project_simplex(x),
        lambda x: ptx.project_lp_ball(x, 1.5, 1.0),
        lambda x: ptx.project_lp_ball(x, 3.0, 1.0),
    ):
        assert torch.autograd.gradcheck(lambda x: (project(x) * w).sum(), (x.clone().requires_grad_(),))


# ----------------------------------------------------------------------------- simplex


@settings(max_examples=25, deadline=None)
@given(dtype=dtypes, n=st.integers(1, 3), d=st.integers(1, 9), seed=st.integers(0, 2**16),
       spread=st.sampled_from([1e-3, 1.0, 30.0]), scale=st.sampled_from([0.5, 1.0, 3.0]))
def test_simplex_projection_is_the_sort_threshold_point(dtype, n, d, seed, spread, scale):
    x = (torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * spread).to(dtype)
    y = ptx.project_simplex(x, scale=scale)
    assert bool((y >= 0).all())
    # sums to scale: each element x_i - tau rounded once (an ulp of the larger of x and scale, at most)
    bound = d * torch.finfo(dtype).eps * torch.maximum(x.double().abs().amax(-1), torch.tensor(scale))
    assert bool(((y.double().sum(-1) - scale).abs() <= bound).all())
    for row, got in zip(x.double(), y):  # Held et al.: sort, threshold
        ordered = row.sort(descending=True).values
        ranks = torch.arange(1, d + 1, dtype=torch.float64)
        thresholds = (ordered.cumsum(0) - scale) / ranks
        support = int((ordered > thresholds).sum())
        want = (row - thresholds[support - 1]).clamp(min=0)
        _assert_close(got, want, dtype, row)
    _assert_close(ptx.project_simplex(y, scale=scale), y.double(), dtype)
    per_datum = ptx.project_simplex(x, scale=torch.full((n,), scale))
    assert torch.equal(per_datum, y)


# ----------------------------------------------------------------------------- Lp ball, 1 < p < inf


@settings(max_examples=8, deadline=None)
@given(dtype=dtypes, p=st.sampled_from([1.1, 1.5, 2.5, 3.0, 7.0]), d=st.integers(1, 8), seed=st.integers(0, 2**16),
       spread=st.sampled_from([1e-2, 1.0, 1e2]), epsilon=st.sampled_from([0.1, 1.0]))
def test_lp_ball_projection_satisfies_kkt_within_1e_6(dtype, p, d, seed, spread, epsilon):
    x = (torch.randn(2, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * spread).to(dtype)
    y = ptx.project_lp_ball(x, p, epsilon)
    assert y.dtype == dtype
    assert bool((_norm(y, p) <= epsilon * (1 + IN_BALL[dtype])).all())
    for row, got in zip(x, y):
        want = oracle_lp(row, p, epsilon)
        # relative KKT residual: distance to the KKT point over the datum's scale
        residual = float((got.double() - want).abs().max()) / max(float(want.abs().max()), 1e-300)
        assert residual <= (1e-6 if dtype == torch.float32 else 1e-11), (p, row, got, want)
    inside = x / (_norm(x, p).clamp(min=1e-300)[:, None] / (0.5 * epsilon)).to(dtype)
    assert torch.equal(ptx.project_lp_ball(inside, p, epsilon), inside)
    batched = ptx.project_lp_ball(x, p, torch.tensor([epsilon, 2 * epsilon], dtype=torch.float64))
    assert torch.equal(batched[1], ptx.project_lp_ball(x[1], p, 2 * epsilon, param_ndim=None))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("p", [1.001, 1.01, 1.1, 1.3, 12.0])
def test_lp_ball_is_exact_for_p_near_one_and_far_above_two(p, dtype):
    # p near 1 starts the inner Newton solve far from its root (up to ln 2 / (p - 1)),
    # p far above 2 in a steep exponential: both need more steps than p near 2
    generator = torch.Generator().manual_seed(7)
    spread = torch.tensor([1e-2, 1.0, 1e2]).repeat(3)[:8, None].double()
    x = (torch.randn(8, 5, generator=generator, dtype=torch.float64) * spread).to(dtype)
    if p == 1.1:
        x[0, :3] = torch.tensor([1.5410, -0.2934, -2.1788])  # once 2.4e-5 from the KKT point in float32
    y = ptx.project_lp_ball(x, p, 1.0)
    for row, got in zip(x, y):
        want = oracle_lp(row, p, 1.0)
        residual = float((got.double() - want).abs().max()) / max(float(want.abs().max()), 1e-300)
        assert residual <= (1e-6 if dtype == torch.float32 else 1e-11), (row, got, want)


def test_lp_ball_rejects_p_outside_one_to_infinity():
    for p, message in ((1.0, "project_lp_ball: p must satisfy 1 < p"), (math.inf, "project_lp_ball: p must be finite")):
        with pytest.raises(ValueError, match=message):
            ptx.project_lp_ball(torch.ones(3), p, 1.0)


def test_tensor_settings_give_the_same_bits_on_the_rows_the_vmap_reference_and_in_place():
    from paramtx._lift import lift
    from paramtx._lift.dense import vmap_reference
    from paramtx._lift.settings import per_datum, per_element
    from paramtx._transforms.ball_box import L1_BALL_BOX

    g = torch.Generator().manual_seed(0)
    x, x0 = torch.randn(4, 3, 5, generator=g), torch.rand(4, 3, 5, generator=g)
    radii = torch.tensor([0.1, 0.5, 1.0, 4.0], dtype=torch.float64)
    calls = [
        lambda: ptx.project_l1_ball(x, radii, lower=-x0, upper=1 - x0),
        lambda: ptx.project_l2_ball(x, radii, lower=-x0, upper=1 - x0),
        lambda: ptx.project_linf_ball(x, radii, lower=-x0, upper=1 - x0),
        lambda: ptx.project_simplex(x, scale=radii),
        lambda: ptx.project_lp_ball(x, 3.0, radii),
    ]
    for call in calls:
        rows = call()
        with vmap_reference():
            assert torch.equal(call(), rows)
    target = x.clone()
    settings = dict(epsilon=per_datum("epsilon", radii), lower=per_element("lower", -x0), upper=per_element("upper", 1 - x0))
    lift.apply_("test", L1_BALL_BOX, -1, target, **settings)
    assert torch.equal(target, calls[0]())
