"""Hypothesis properties of the functional core, on random shapes, ``param_ndim`` and float32/float64.

Tolerances are worst-case rounding bounds with ``u = torch.finfo(dtype).eps``
and ``D`` the number of elements in a datum: a float norm of ``D`` terms is
within ``D * u`` (relative) of the exact one, and each further division or
product adds ``u``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import paramtx as ptx

TINY = torch.finfo(torch.float32).tiny
from ptx_testing import (
    assert_trees_equal,
    assert_untouched,
    batch_view,
    dtypes,
    make_tree,
    per_datum_norm,
    run_steps,
    shape_and_param_ndim,
    snapshot,
    tensors,
)
from transforms_registry import ENTRIES

# down to 1e-6: below the float32 resolution of the largest magnitudes drawn (1e3 * 4 sigma)
epsilons = st.floats(1e-6, 1e2)
norm_orders = st.sampled_from([1.0, 2.0, 3.0, math.inf])


def unit(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def datum_size(x: torch.Tensor, param_ndim) -> int:
    return batch_view(x, param_ndim)[0].numel() if x.numel() else 0


# ----------------------------------------------------------------------------- projections


@given(data=st.data(), case=shape_and_param_ndim(), dtype=dtypes, epsilon=epsilons)
def test_project_l2_ball_lands_in_the_ball_and_is_idempotent(data, case, dtype, epsilon):
    shape, param_ndim = case
    x = data.draw(tensors(shape, dtype))
    y = ptx.project_l2_ball(x, epsilon, param_ndim=param_ndim)
    size, u = datum_size(x, param_ndim), unit(dtype)
    slack = (size + 2) * u  # the datum's norm (D u), epsilon / norm (u), the product (u)
    assert (per_datum_norm(y, 2, param_ndim) <= epsilon * (1 + slack)).all()
    # a second projection moves a point by at most its rounding excess over the sphere
    torch.testing.assert_close(ptx.project_l2_ball(y, epsilon, param_ndim=param_ndim), y, rtol=2 * slack, atol=0)


@given(data=st.data(), case=shape_and_param_ndim(), dtype=dtypes, epsilon=epsilons)
def test_project_l1_ball_lands_in_the_ball_and_is_idempotent(data, case, dtype, epsilon):
    shape, param_ndim = case
    x = data.draw(tensors(shape, dtype))
    y = ptx.project_l1_ball(x, epsilon, param_ndim=param_ndim)
    size, u = datum_size(x, param_ndim), unit(dtype)
    # theta comes from a cumulative sum of magnitudes (error <= D u ||x||_1), and
    # ||y||_1 = S_rho - rho theta doubles it; the final rounding of each y_i adds u eps.
    x_l1 = per_datum_norm(x, 1, param_ndim)
    assert (per_datum_norm(y, 1, param_ndim) <= epsilon + 2 * size * u * x_l1 + u * epsilon).all()
    # y has the signs of x and no larger magnitudes (a soft threshold)
    assert (y * x >= 0).all() and (y.abs() <= x.abs()).all()
    y_l1 = per_datum_norm(y, 1, param_ndim)
    again = ptx.project_l1_ball(y, epsilon, param_ndim=param_ndim)
    # the second projection's theta is at most y's excess over the sphere
    excess = (y_l1 - epsilon).clamp(min=0).max().item()
    torch.testing.assert_close(again, y, rtol=0, atol=excess + 2 * size * u * y_l1.max().item() + u * epsilon)


@given(data=st.data(), case=shape_and_param_ndim(), dtype=dtypes, p=st.sampled_from(["l1", "l2"]))
def test_projections_leave_points_inside_the_ball_exactly_unchanged(data, case, dtype, p):
    shape, param_ndim = case
    x = data.draw(tensors(shape, dtype, zero_rows=True))
    order = 1 if p == "l1" else 2
    norms = per_datum_norm(x, order, param_ndim)
    epsilon = 1.01 * norms.max().item() + 1e-3  # every datum strictly inside, by more than rounding
    projection = ptx.project_l1_ball if p == "l1" else ptx.project_l2_ball
    assert_trees_equal(projection(x, epsilon, param_ndim=param_ndim), x)


@given(data=st.data(), case=shape_and_param_ndim(), dtype=dtypes, epsilon=epsilons)
def test_project_linf_ball_and_box_land_in_the_set_exactly_and_are_idempotent(data, case, dtype, epsilon):
    shape, _ = case
    x = data.draw(tensors(shape, dtype))
    eps = torch.tensor(epsilon, dtype=dtype).item()  # the bound as the dtype rounds it
    y = ptx.project_linf_ball(x, epsilon)
    assert (y.abs() <= eps).all()
    assert_trees_equal(ptx.project_linf_ball(y, epsilon), y)
    inside = x.abs() <= eps
    assert torch.equal(y[inside], x[inside])
    b = ptx.project_box(x, -epsilon / 2, epsilon)
    assert (b >= torch.tensor(-epsilon / 2, dtype=dtype)).all() and (b <= eps).all()
    assert_trees_equal(ptx.project_box(b, -epsilon / 2, epsilon), b)


def _l1_projection_by_bisection(x: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Brute force in float64: theta >= 0 with sum(max(|x| - theta, 0)) = epsilon, by bisection."""
    magnitude = x.abs()
    if magnitude.sum() <= epsilon:
        return x.clone()
    low, high = 0.0, magnitude.max().item()
    for _ in range(200):
        theta = (low + high) / 2
        if (magnitude - theta).clamp(min=0).sum() > epsilon:
            low = theta
        else:
            high = theta
    return torch.sign(x) * (magnitude - (low + high) / 2).clamp(min=0)


@given(
    x=st.lists(st.floats(-10, 10), min_size=1, max_size=6).map(lambda v: torch.tensor(v, dtype=torch.float64)),
    epsilon=st.floats(0.05, 20),
)
def test_project_l1_ball_is_the_kkt_point_found_by_brute_force(x, epsilon):
    y = ptx.project_l1_ball(x, epsilon, param_ndim=None)
    scale = max(1.0, x.abs().sum().item())
    # bisection to 200 halvings is exact in float64; the sort-based result carries
    # cumulative-sum rounding, a few ulps of ||x||_1
    torch.testing.assert_close(y, _l1_projection_by_bisection(x, epsilon), rtol=0, atol=1e-13 * scale)
    # KKT: x - y = theta * s with s in the subdifferential of ||.||_1 at y, theta >= 0
    r = x - y
    theta = r.abs().max().item()
    support = y != 0
    assert torch.allclose(r[support], theta * torch.sign(y[support]), rtol=0, atol=1e-12 * scale)
    assert (r[~support].abs() <= theta + 1e-12 * scale).all()
    if x.abs().sum() > epsilon:
        assert math.isclose(y.abs().sum().item(), epsilon, rel_tol=0, abs_tol=1e-12 * scale)
    else:
        assert torch.equal(y, x) and theta == 0


# ----------------------------------------------------------------------------- normalize


@given(data=st.data(), case=shape_and_param_ndim(), dtype=dtypes, p=norm_orders)
def test_normalize_gives_unit_norm_or_zero_per_datum(data, case, dtype, p):
    shape, param_ndim = case
    x = data.draw(tensors(shape, dtype, zero_rows=True))
    tx = ptx.normalize(p, param_ndim=param_ndim)
    y = tx.update(x, tx.init(None))[0]
    assert not torch.isnan(y).any()
    zero = per_datum_norm(x, p, param_ndim) == 0
    norms = per_datum_norm(y, p, param_ndim)
    slack = (datum_size(x, param_ndim) + 2) * unit(dtype)  # the norm (D u), the division (u), re-measuring (u)
    torch.testing.assert_close(norms[~zero], torch.ones_like(norms[~zero]), rtol=0, atol=slack)
    assert (norms[zero] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
@given(case=shape_and_param_ndim(), p=norm_orders)
def test_normalize_maps_a_zero_datum_to_zero_never_nan_in_every_dtype(dtype, case, p):
    shape, param_ndim = case
    tx = ptx.normalize(p, param_ndim=param_ndim)
    y = tx.update(torch.zeros(shape, dtype=dtype), tx.init(None))[0]
    assert y.dtype == dtype
    assert torch.equal(y, torch.zeros(shape, dtype=dtype))


@pytest.mark.parametrize(
    "magnitude, eps", [(1e-30, TINY), (1e-19, TINY), (1e19, TINY), (1e30, TINY), (1e-40, 0.0)], ids=str
)
def test_normalize_gives_unit_norm_for_tiny_and_huge_float32_gradients(magnitude, eps):
    # squares of these underflow or overflow in float32: the norm is taken of the
    # datum scaled by a power of two. (1e-40 is a subnormal float32, below the
    # default eps, the smallest normal: only eps=0 lets it be normalized.)
    x = torch.tensor([magnitude, 2 * magnitude])
    tx = ptx.normalize(2, param_ndim=None, eps=eps)
    torch.testing.assert_close(torch.linalg.vector_norm(tx.update(x, tx.init(None))[0].double()).item(), 1.0)


# ----------------------------------------------------------------------------- top_q


@given(data=st.data(), case=shape_and_param_ndim(), dtype=dtypes, q=st.floats(0.0, 1.0))
def test_top_q_keeps_exactly_the_rounded_count_of_the_largest_per_datum(data, case, dtype, q):
    shape, param_ndim = case
    x = data.draw(tensors(shape, dtype))
    assume(x.numel() == 0 or (x != 0).all())  # normal samples: never 0 in practice
    tx = ptx.top_q(q, param_ndim=param_ndim)
    y = tx.update(x, tx.init(None))[0]
    size = datum_size(x, param_ndim)
    keep = round((1 - q) * size)
    rows_x = batch_view(x, param_ndim).flatten(1)
    rows_y = batch_view(y, param_ndim).flatten(1)
    kept = rows_y != 0
    assert (kept.sum(dim=1) == keep).all()
    assert torch.equal(rows_y[kept], rows_x[kept])  # kept values are the inputs, not rescaled
    for row_x, row_kept in zip(rows_x, kept):
        if 0 < keep < size:
            assert row_x[row_kept].abs().min() >= row_x[~row_kept].abs().max()


# ----------------------------------------------------------------------------- chain, purity


@given(
    a=st.sampled_from(ENTRIES),
    b=st.sampled_from(ENTRIES),
    c=st.sampled_from(ENTRIES),
    kind=st.sampled_from(["dict", "nested"]),
)
def test_chain_is_associative(a, b, c, kind):
    left = ptx.chain(ptx.chain(a.build(-1), b.build(-1)), c.build(-1))
    right = ptx.chain(a.build(-1), ptx.chain(b.build(-1), c.build(-1)))
    flat = ptx.chain(a.build(-1), b.build(-1), c.build(-1))
    params = make_tree(kind, torch.float64, seed=5, scale=0.3)
    grads = [make_tree(kind, torch.float64, seed=6 + k) for k in range(3)]
    left_out, _, left_params = run_steps(left, grads, params)
    right_out, _, right_params = run_steps(right, grads, params)
    flat_out, _, _ = run_steps(flat, grads, params)
    # the same operations in the same order: bit-for-bit equal
    assert_trees_equal(left_out, right_out)
    assert_trees_equal(left_out, flat_out)
    assert_trees_equal(left_params, right_params)


@given(entry=st.sampled_from(ENTRIES), data=st.data(), case=shape_and_param_ndim(min_dims=1), dtype=dtypes)
def test_update_never_mutates_its_inputs(entry, data, case, dtype):
    shape, param_ndim = case
    nd = param_ndim if entry.per_datum else -1
    grads = {"g": data.draw(tensors(shape, dtype)), "h": data.draw(tensors((2, 3), dtype))}
    params = {"g": data.draw(tensors(shape, dtype, scale=0.3)), "h": data.draw(tensors((2, 3), dtype, scale=0.3))}
    if entry.per_datum and param_ndim is not None and abs(param_ndim) > 2:
        nd = None  # the (2, 3) leaf must fit too
    tx = entry.build(nd)
    state = tx.init(params)
    for _ in range(2):
        before = snapshot(grads, state, params)
        updates, new_state = tx.update(grads, state, params)
        assert_untouched(before)
        params, state = ptx.apply_updates(params, updates), new_state
