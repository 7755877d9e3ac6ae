"""Hand-computed values of every transform, for every ``param_ndim`` case.

The values are decimal fractions computed by hand (the arithmetic is in the
comments); they are compared in float64 with ``rtol = atol = 1e-12``: the only
error allowed is the rounding of decimal fractions like 7.2 / 12 (~1e-16), far
below any mistake in a formula.
"""

from __future__ import annotations

import math

import pytest
import torch

import paramtx as ptx
from paramtx._transforms.sparsity import kept_count
from ptx_testing import DEVICE


def close(actual, expected):
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), rtol=1e-12, atol=1e-12)


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def once(tx, updates, params=None):
    """One update from a fresh state."""
    return tx.update(updates, tx.init(params), params)[0]


# X, shape (2, 2, 2): rows [3, -4], [0, 0], [7.2, 0], [0, -9.6];
# blocks X[0] (L2 norm 5, L1 7, Linf 4) and X[1] (L2 12, L1 16.8, Linf 9.6);
# whole tensor: L2 13, L1 23.8, Linf 9.6.
X = [[[3.0, -4.0], [0.0, 0.0]], [[7.2, 0.0], [0.0, -9.6]]]
SIGN_X = [[[1.0, -1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, -1.0]]]

# param_ndim values that give the same datum on a 3-d tensor
ELEMENTS, ROWS, BLOCKS, WHOLE = (0, -3), (1, -2), (2, -1), (3, None)


def by_datum(table):
    """Expand {datum kind: expected} to {param_ndim: expected}."""
    return [(nd, expected) for kinds, expected in table for nd in kinds]


# ----------------------------------------------------------------------------- element-wise


def test_scale_multiplies_every_element():
    close(once(ptx.scale(-0.5), t([1.0, -2.0, 0.0])), [-0.5, 1.0, 0.0])


def test_add_adds_the_bias_to_every_element():
    close(once(ptx.add(0.25), t([[1.0], [-2.0]])), [[1.25], [-1.75]])


@pytest.mark.parametrize(
    "low, high, expected",
    [
        (-1.0, 2.0, [-1.0, -1.0, 0.5, 2.0, 2.0]),
        (-1.0, None, [-1.0, -1.0, 0.5, 2.0, 4.0]),
        (None, 2.0, [-3.0, -1.0, 0.5, 2.0, 2.0]),
        (0.5, 0.5, [0.5, 0.5, 0.5, 0.5, 0.5]),
    ],
    ids=["both", "min_only", "max_only", "min_equals_max"],
)
def test_clamp_bounds_every_element(low, high, expected):
    close(once(ptx.clamp(low, high), t([-3.0, -1.0, 0.5, 2.0, 4.0])), expected)


def test_sign_maps_to_plus_minus_one_and_keeps_zeros():
    out = once(ptx.sign(), t([0.3, 0.0, -2.0, -0.0, 1e-300]))
    close(out, [1.0, 0.0, -1.0, 0.0, 1.0])


def test_identity_returns_the_updates_unchanged():
    tx = ptx.identity()
    updates = {"w": t([1.0, 2.0]), "b": None}
    out, state = tx.update(updates, tx.init(None))
    assert out is updates
    assert state == ptx.EmptyState()


# ----------------------------------------------------------------------------- normalize


NORMALIZE_L2 = by_datum(
    [
        (ELEMENTS, SIGN_X),
        (ROWS, [[[0.6, -0.8], [0.0, 0.0]], [[1.0, 0.0], [0.0, -1.0]]]),
        (BLOCKS, [[[0.6, -0.8], [0.0, 0.0]], [[0.6, 0.0], [0.0, -0.8]]]),  # /5, /12
        (WHOLE, [[[3 / 13, -4 / 13], [0.0, 0.0]], [[7.2 / 13, 0.0], [0.0, -9.6 / 13]]]),
    ]
)
NORMALIZE_L1 = by_datum(
    [
        (ELEMENTS, SIGN_X),
        (ROWS, [[[3 / 7, -4 / 7], [0.0, 0.0]], [[1.0, 0.0], [0.0, -1.0]]]),
        (BLOCKS, [[[3 / 7, -4 / 7], [0.0, 0.0]], [[3 / 7, 0.0], [0.0, -4 / 7]]]),  # /7, /16.8
        (WHOLE, [[[3 / 23.8, -4 / 23.8], [0.0, 0.0]], [[7.2 / 23.8, 0.0], [0.0, -9.6 / 23.8]]]),
    ]
)
NORMALIZE_LINF = by_datum(
    [
        (ELEMENTS, SIGN_X),
        (ROWS, [[[0.75, -1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, -1.0]]]),
        (BLOCKS, [[[0.75, -1.0], [0.0, 0.0]], [[0.75, 0.0], [0.0, -1.0]]]),  # /4, /9.6
        (WHOLE, [[[3 / 9.6, -4 / 9.6], [0.0, 0.0]], [[0.75, 0.0], [0.0, -1.0]]]),
    ]
)


@pytest.mark.parametrize("param_ndim, expected", NORMALIZE_L2, ids=str)
def test_normalize_l2_divides_each_datum_by_its_l2_norm(param_ndim, expected):
    close(once(ptx.normalize(2, param_ndim=param_ndim), t(X)), expected)


@pytest.mark.parametrize("param_ndim, expected", NORMALIZE_L1, ids=str)
def test_normalize_l1_divides_each_datum_by_its_l1_norm(param_ndim, expected):
    close(once(ptx.normalize(1, param_ndim=param_ndim), t(X)), expected)


@pytest.mark.parametrize("param_ndim, expected", NORMALIZE_LINF, ids=str)
def test_normalize_linf_divides_each_datum_by_its_largest_magnitude(param_ndim, expected):
    close(once(ptx.normalize(math.inf, param_ndim=param_ndim), t(X)), expected)


def test_normalize_p3_divides_by_the_cube_root_of_the_sum_of_cubed_magnitudes():
    # ||(3, -4)||_3 = (27 + 64) ** (1/3) = 91 ** (1/3)
    norm = 91 ** (1 / 3)
    close(once(ptx.normalize(3, param_ndim=-1), t([[3.0, -4.0], [0.0, 2.0]])), [[3 / norm, -4 / norm], [0.0, 1.0]])


def test_normalize_maps_a_zero_datum_to_zero_and_clamps_the_norm_at_eps():
    close(once(ptx.normalize(2, param_ndim=-1), t([[0.0, 0.0], [3.0, 4.0]])), [[0.0, 0.0], [0.6, 0.8]])
    # the norm 5 is below eps = 10: divide by 10
    close(once(ptx.normalize(2, param_ndim=None, eps=10.0), t([3.0, 4.0])), [0.3, 0.4])
    # eps = 0 still maps a zero datum to zero (the divisor's floor is the smallest normal
    # number), and leaves a tiny one unit-normed
    close(once(ptx.normalize(1, param_ndim=None, eps=0.0), t([0.0, 0.0])), [0.0, 0.0])
    close(once(ptx.normalize(1, param_ndim=None, eps=0.0), t([1e-300, 3e-300])), [0.25, 0.75])


# ----------------------------------------------------------------------------- top_q


@pytest.mark.parametrize(
    "q, size, expected",
    [
        (0.5, 5, 2),  # round(2.5) = 2: Python rounds half to even
        (0.5, 3, 2),  # round(1.5) = 2
        (0.5, 1, 0),  # round(0.5) = 0
        (0.25, 2, 2),  # round(1.5) = 2
        (0.75, 2, 0),  # round(0.5) = 0
        (0.7, 10, 3),  # round(3.0000000000000004) = 3
        (0.9, 10, 1),
        (0.33, 3, 2),  # round(2.01) = 2 (rai-toolbox's seed example)
        (0.0, 7, 7),
        (1.0, 7, 0),
    ],
    ids=str,
)
def test_kept_count_is_python_round_of_one_minus_q_times_d(q, size, expected):
    assert kept_count(q, size) == expected == round((1 - q) * size)


@pytest.mark.parametrize(
    "q, size, kept",
    [(0.5, 5, 2), (0.5, 3, 2), (0.25, 2, 2), (0.7, 10, 3), (0.9, 10, 1)],
    ids=str,
)
def test_top_q_keeps_exactly_the_rounded_count_of_largest_magnitudes(q, size, kept):
    # magnitudes 1..size with alternating signs, in a scrambled order
    values = [(-1.0) ** k * (k + 1) for k in range(size)]
    order = [(3 * k + 1) % size for k in range(size)] if size % 3 else list(range(size))[::-1]
    x = t([values[i] for i in order])
    out = once(ptx.top_q(q, param_ndim=None), x)
    expected = torch.where(x.abs() > size - kept, x, torch.zeros_like(x))
    close(out, expected)
    assert int((out != 0).sum()) == kept


TOP_Q_050 = by_datum(
    [
        (ELEMENTS, [[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]),  # D=1: keep round(0.5) = 0
        (ROWS, [[[0.0, -4.0], [0.0, 0.0]], [[7.2, 0.0], [0.0, -9.6]]]),  # D=2: keep 1
        (BLOCKS, X),  # D=4: keep 2, every block has 2 non-zeros
        (WHOLE, X),  # D=8: keep 4, the 4 non-zeros
    ]
)
TOP_Q_075 = by_datum(
    [
        (ELEMENTS, [[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]),  # keep round(0.25) = 0
        (ROWS, [[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]),  # keep round(0.5) = 0
        (BLOCKS, [[[0.0, -4.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, -9.6]]]),  # keep round(1.0) = 1
        (WHOLE, [[[0.0, 0.0], [0.0, 0.0]], [[7.2, 0.0], [0.0, -9.6]]]),  # keep round(2.0) = 2
    ]
)


@pytest.mark.parametrize("param_ndim, expected", TOP_Q_050, ids=str)
def test_top_q_half_for_every_param_ndim(param_ndim, expected):
    close(once(ptx.top_q(0.5, param_ndim=param_ndim), t(X)), expected)


@pytest.mark.parametrize("param_ndim, expected", TOP_Q_075, ids=str)
def test_top_q_three_quarters_for_every_param_ndim(param_ndim, expected):
    close(once(ptx.top_q(0.75, param_ndim=param_ndim), t(X)), expected)


@pytest.mark.parametrize("param_ndim", [None, 0, 1, -1, 2])
def test_top_q_zero_keeps_everything_and_one_drops_everything(param_ndim):
    x = t(X)
    close(once(ptx.top_q(0.0, param_ndim=param_ndim), x), X)
    close(once(ptx.top_q(1.0, param_ndim=param_ndim), x), torch.zeros(2, 2, 2))


def test_top_q_advances_its_counter_and_keeps_its_seed():
    tx = ptx.top_q(0.5, seed=3)
    state = tx.init(None)
    assert state == ptx.TopQState(seed=3, count=0)
    _, state = tx.update(t([1.0, 2.0]), state)
    _, state = tx.update(t([1.0, 2.0]), state)
    assert state == ptx.TopQState(seed=3, count=2)


# ----------------------------------------------------------------------------- LMOs


LMO_L1 = by_datum(
    [
        (ELEMENTS, SIGN_X),
        (ROWS, [[[0.0, -1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, -1.0]]]),
        # multi-dim datum: the argmax over the whole (2, 2) block; rai-toolbox's
        # L1FrankWolfe raises IndexError here (see test_parity_rai.py)
        (BLOCKS, [[[0.0, -1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, -1.0]]]),
        (WHOLE, [[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, -1.0]]]),
    ]
)


@pytest.mark.parametrize("param_ndim, expected", LMO_L1, ids=str)
def test_lmo_l1_is_a_one_hot_sign_at_the_largest_magnitude_of_each_datum(param_ndim, expected):
    close(once(ptx.lmo_l1(param_ndim=param_ndim), t(X)), expected)


def test_lmo_l1_on_image_shaped_data_takes_the_argmax_over_the_whole_datum():
    # two "images" of shape (2, 2, 3), param_ndim=-1 (rai-toolbox's usual case)
    x = torch.zeros(2, 2, 2, 3, dtype=torch.float64)
    x[0, 1, 0, 2] = -5.0
    x[0, 0, 1, 1] = 4.0
    x[1, 0, 0, 0] = 0.5
    x[1, 1, 1, 2] = 0.7
    expected = torch.zeros_like(x)
    expected[0, 1, 0, 2] = -1.0
    expected[1, 1, 1, 2] = 1.0
    close(once(ptx.lmo_l1(param_ndim=-1), x), expected)


def test_lmo_l1_breaks_ties_at_the_first_element_and_maps_zero_to_zero():
    close(once(ptx.lmo_l1(param_ndim=-1), t([[2.0, -2.0, 1.0], [0.0, 0.0, 0.0]])), [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])


LMO_L1Q_050 = by_datum(
    [
        (ELEMENTS, [[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]),  # keep 0
        (ROWS, [[[0.0, -1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, -1.0]]]),  # keep 1: sign / 1
        (BLOCKS, [[[0.5, -0.5], [0.0, 0.0]], [[0.5, 0.0], [0.0, -0.5]]]),  # keep 2: sign / 2
        (WHOLE, [[[0.25, -0.25], [0.0, 0.0]], [[0.25, 0.0], [0.0, -0.25]]]),  # keep 4: sign / 4
    ]
)


@pytest.mark.parametrize("param_ndim, expected", LMO_L1Q_050, ids=str)
def test_lmo_l1q_is_the_l1_normalized_sign_of_the_top_q(param_ndim, expected):
    close(once(ptx.lmo_l1q(0.5, param_ndim=param_ndim), t(X)), expected)


def test_lmo_l1q_keeps_round_of_one_minus_q_times_d_signs():
    # D = 3, q = 0.3: keep round(2.1) = 2 signs, each 1/2
    close(once(ptx.lmo_l1q(0.3, param_ndim=None), t([0.0, -1.0, 2.0])), [0.0, -0.5, 0.5])


@pytest.mark.parametrize("param_ndim, expected", NORMALIZE_L2, ids=str)
def test_lmo_l2_is_the_l2_normalized_gradient(param_ndim, expected):
    close(once(ptx.lmo_l2(param_ndim=param_ndim), t(X)), expected)


def test_lmo_linf_is_the_sign():
    close(once(ptx.lmo_linf(), t(X)), SIGN_X)


# ----------------------------------------------------------------------------- Frank-Wolfe


def _fw_trajectory(tx, p0, directions):
    params, state, points = p0, tx.init(p0), []
    for s in directions:
        updates, state = tx.update(s, state, params)
        params = ptx.apply_updates(params, updates)
        points.append(params)
    return points, state


def test_frank_wolfe_default_schedule_uses_alpha_lr_over_lr_plus_k():
    # lr = 2: alpha = 2/2, 2/3, 2/4; p <- (1 - alpha) p - alpha * 1.5 * s
    # p1 = -1.5 * (1, 0)                      = (-1.5, 0)
    # p2 = (1/3) (-1.5, 0) - 1.0 * (0, -1)     = (-0.5, 1)
    # p3 = (1/2) (-0.5, 1) - 0.75 * (1, 0)     = (-1.0, 0.5)
    directions = [t([1.0, 0.0]), t([0.0, -1.0]), t([1.0, 0.0])]
    points, state = _fw_trajectory(ptx.frank_wolfe(1.5), t([1.0, -2.0]), directions)
    close(points[0], [-1.5, 0.0])
    close(points[1], [-0.5, 1.0])
    close(points[2], [-1.0, 0.5])
    assert state.count.item() == 3 and state.count.dtype == torch.int64


def test_frank_wolfe_schedule_with_lr_one():
    # alpha = 1/1, 1/2: p1 = -2 (0, 1) = (0, -2); p2 = (1/2) (0, -2) - (1/2) 2 (1, 0) = (-1, -1)
    points, _ = _fw_trajectory(ptx.frank_wolfe(2.0, lr=1.0), t([5.0, 5.0]), [t([0.0, 1.0]), t([1.0, 0.0])])
    close(points[0], [0.0, -2.0])
    close(points[1], [-1.0, -1.0])


def test_frank_wolfe_without_schedule_uses_alpha_lr():
    # alpha = 0.5: p1 = 0.5 (1, -2) - 0.75 (1, 0) = (-0.25, -1);
    #              p2 = 0.5 (-0.25, -1) - 0.75 (0, -1) = (-0.125, 0.25)
    tx = ptx.frank_wolfe(1.5, lr=0.5, use_default_lr_schedule=False)
    points, _ = _fw_trajectory(tx, t([1.0, -2.0]), [t([1.0, 0.0]), t([0.0, -1.0])])
    close(points[0], [-0.25, -1.0])
    close(points[1], [-0.125, 0.25])


def test_frank_wolfe_with_lr_zero_does_not_move_and_gives_no_nan():
    # alpha = 0 / max(eps, 0 + 0) = 0
    points, _ = _fw_trajectory(ptx.frank_wolfe(1.0, lr=0.0), t([1.0, -2.0]), [t([1.0, 0.0])])
    close(points[0], [1.0, -2.0])


def test_frank_wolfe_counts_steps_per_parameter():
    tx = ptx.frank_wolfe(1.0)
    params = {"a": t([1.0]), "b": t([1.0])}
    state = tx.init(params)
    # step 1: only "a" has a direction; "b" keeps k = 0
    updates, state = tx.update({"a": t([1.0]), "b": None}, state, params)
    assert updates["b"] is None
    params = ptx.apply_updates(params, updates)
    assert state.count["a"].item() == 1 and state.count["b"].item() == 0
    # step 2: "a" uses alpha = 2/3, "b" alpha = 1: a = (1/3)(-1) - (2/3)(1) = -1; b = -1
    updates, state = tx.update({"a": t([1.0]), "b": t([1.0])}, state, params)
    params = ptx.apply_updates(params, updates)
    close(params["a"], [-1.0])
    close(params["b"], [-1.0])
    # with direction -1: a = (1/2)(-1) + (1/2) = 0; b = (1/3)(-1) + (2/3) = 1/3
    updates, state = tx.update({"a": t([-1.0]), "b": t([-1.0])}, state, params)
    params = ptx.apply_updates(params, updates)
    close(params["a"], [0.0])
    close(params["b"], [1 / 3])


def test_frank_wolfe_after_lmo_l1_on_image_shaped_data():
    # lmo_l1 per (2, 2) block of X, then alpha_0 = 1: p1 = -2 * s
    tx = ptx.chain(ptx.lmo_l1(param_ndim=-1), ptx.frank_wolfe(2.0))
    p0 = torch.zeros(2, 2, 2, dtype=torch.float64)
    points, _ = _fw_trajectory(tx, p0, [t(X)])
    close(points[0], [[[0.0, 2.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]])


def test_frank_wolfe_after_lmo_l1q_matches_the_docstring_example():
    tx = ptx.chain(ptx.lmo_l1q(q=0.3, param_ndim=None), ptx.frank_wolfe(epsilon=1.8))
    points, _ = _fw_trajectory(tx, t([1.0, 1.0, 1.0]), [t([0.0, 1.0, 2.0])])
    close(points[0], [0.0, -0.9, -0.9])  # -1.8 * (0, 1/2, 1/2)


# ----------------------------------------------------------------------------- projections


PROJECT_L2_6 = by_datum(
    [
        (ELEMENTS, [[[3.0, -4.0], [0.0, 0.0]], [[6.0, 0.0], [0.0, -6.0]]]),
        (ROWS, [[[3.0, -4.0], [0.0, 0.0]], [[6.0, 0.0], [0.0, -6.0]]]),  # (3, -4) has norm 5 <= 6
        (BLOCKS, [[[3.0, -4.0], [0.0, 0.0]], [[3.6, 0.0], [0.0, -4.8]]]),  # block 1: x 6/12
        (WHOLE, [[[18 / 13, -24 / 13], [0.0, 0.0]], [[43.2 / 13, 0.0], [0.0, -57.6 / 13]]]),  # x 6/13
    ]
)


@pytest.mark.parametrize("param_ndim, expected", PROJECT_L2_6, ids=str)
def test_project_l2_ball_rescales_only_the_data_outside(param_ndim, expected):
    close(ptx.project_l2_ball(t(X), epsilon=6.0, param_ndim=param_ndim), expected)


# Duchi et al.: sort magnitudes u, rho = last j with u_j > (u_1 + .. + u_j - eps) / j,
# theta = (u_1 + .. + u_rho - eps) / rho, y = sign(x) max(|x| - theta, 0).
PROJECT_L1_6 = by_datum(
    [
        (ELEMENTS, [[[3.0, -4.0], [0.0, 0.0]], [[6.0, 0.0], [0.0, -6.0]]]),
        # (3, -4): u = (4, 3), theta = (7 - 6) / 2 = 0.5 -> (2.5, -3.5); (7.2, 0): theta = 1.2
        (ROWS, [[[2.5, -3.5], [0.0, 0.0]], [[6.0, 0.0], [0.0, -6.0]]]),
        # block 1: u = (9.6, 7.2, 0, 0), rho = 2, theta = (16.8 - 6) / 2 = 5.4
        (BLOCKS, [[[2.5, -3.5], [0.0, 0.0]], [[1.8, 0.0], [0.0, -4.2]]]),
        # whole: u = (9.6, 7.2, 4, 3, ...): j=3 fails as 4 < (20.8 - 6) / 3, so theta = 5.4
        (WHOLE, [[[0.0, 0.0], [0.0, 0.0]], [[1.8, 0.0], [0.0, -4.2]]]),
    ]
)


@pytest.mark.parametrize("param_ndim, expected", PROJECT_L1_6, ids=str)
def test_project_l1_ball_soft_thresholds_each_datum_onto_the_sphere(param_ndim, expected):
    close(ptx.project_l1_ball(t(X), epsilon=6.0, param_ndim=param_ndim), expected)


@pytest.mark.parametrize(
    "x, epsilon, expected",
    [
        ([0.9, -0.6, 0.1], 1.0, [0.65, -0.35, 0.0]),  # rho = 2, theta = (1.5 - 1) / 2 = 0.25
        ([3.0, 1.0, 0.5], 2.0, [2.0, 0.0, 0.0]),  # j = 2: 1 > (4 - 2) / 2 fails (strict), theta = 1
        ([1.0, -1.0, 1.0], 1.5, [0.5, -0.5, 0.5]),  # ties: theta = (3 - 1.5) / 3 = 0.5
        ([0.5, -0.2], 1.0, [0.5, -0.2]),  # inside: unchanged
        ([0.0, 0.0], 1.0, [0.0, 0.0]),
        ([-5.0], 2.0, [-2.0]),
    ],
    ids=str,
)
def test_project_l1_ball_exact_examples(x, epsilon, expected):
    close(ptx.project_l1_ball(t(x), epsilon=epsilon, param_ndim=None), expected)


def test_project_l1_ball_when_epsilon_is_below_the_float_resolution_of_the_largest_magnitude():
    # 3e7 - 1 rounds to 3e7 in float32, so the rank-1 test u_1 > u_1 - eps fails in
    # floating point: the projection must still land in the ball, not raise.
    # The exact projection is (1, 0): the soft threshold is computed without forming
    # 3e7 - theta, which float32 could only round to 0 or 2.
    y = ptx.project_l1_ball(torch.tensor([3e7, 1.0]), epsilon=1.0, param_ndim=None)
    assert torch.equal(y, torch.tensor([1.0, 0.0]))
    # ... and (1e-3,) here, rounded to float32 towards zero, to stay in the ball (float32's
    # nearest value to 1e-3 is 1e-3 * (1 + 4.7e-8), outside it)
    y = ptx.project_l1_ball(torch.tensor([1e10]), epsilon=1e-3)
    assert y.item() <= 1e-3 and y.item() == pytest.approx(1e-3, rel=1.2e-7)


def test_project_linf_ball_clamps_each_element():
    close(ptx.project_linf_ball(t(X), epsilon=5.0), [[[3.0, -4.0], [0.0, 0.0]], [[5.0, 0.0], [0.0, -5.0]]])


def test_project_box_clamps_each_element_into_the_box():
    close(ptx.project_box(t([-0.2, 0.5, 1.7, 1.0]), lower=0.0, upper=1.0), [0.0, 0.5, 1.0, 1.0])


def test_projections_map_pytrees_and_pass_none_through():
    tree = {"a": t([3.0, 4.0]), "b": None, "c": [t([-2.0])]}
    out = ptx.project_l2_ball(tree, epsilon=1.0, param_ndim=None)
    close(out["a"], [0.6, 0.8])
    assert out["b"] is None
    close(out["c"][0], [-1.0])
    # with the default param_ndim=-1, a 1-d tensor is a batch of scalars
    close(ptx.project_l2_ball(tree, epsilon=1.0)["a"], [1.0, 1.0])


def test_projected_update_is_projection_of_p_plus_u_minus_p():
    # p + u = (3, 4) -> (0.6, 0.8); update = (0.6, 0.8) - (0.5, 0) = (0.1, 0.8)
    tx = ptx.projected(ptx.project_l2_ball, epsilon=1.0, param_ndim=None)
    p = t([0.5, 0.0])
    u = once(tx, t([2.5, 4.0]), p)
    close(u, [0.1, 0.8])
    close(ptx.apply_updates(p, u), [0.6, 0.8])


def test_projected_box_and_l1_updates():
    # p + u = (-0.3, 1.4) -> (0, 1): update (-0.2, 0.1)
    close(once(ptx.projected(ptx.project_box, lower=0.0, upper=1.0), t([-0.5, 0.5]), t([0.2, 0.9])), [-0.2, 0.1])
    # p + u = (0.9, -0.6, 0.1) -> (0.65, -0.35, 0): update = projection - p
    p = t([0.4, -0.1, 0.1])
    u = once(ptx.projected(ptx.project_l1_ball, epsilon=1.0, param_ndim=None), t([0.5, -0.5, 0.0]), p)
    close(u, [0.25, -0.25, -0.1])


def test_sgd_then_projected_keeps_the_parameter_in_the_ball():
    # the package docstring example: normalize per row, step of 1, project per row
    tx = ptx.chain(ptx.normalize(p=2), ptx.sgd(lr=1.0), ptx.projected(ptx.project_l2_ball, epsilon=1.0))
    params = {"w": t([[3.0, 0.0], [0.0, 0.5]])}
    updates, _ = tx.update({"w": t([[-1.0, 0.0], [0.0, -2.0]])}, tx.init(params), params)
    close(ptx.apply_updates(params, updates)["w"], [[1.0, 0.0], [0.0, 1.0]])


# ----------------------------------------------------------------------------- inner steps


def test_sgd_momentum_and_nesterov_by_hand():
    p, g = t([1.0]), t([2.0])
    tx = ptx.sgd(lr=0.1, momentum=0.9)
    u1, state = tx.update(g, tx.init(p), p)
    u2, _ = tx.update(g, state, p)
    close(u1, [-0.2])  # b = 2
    close(u2, [-0.38])  # b = 0.9 * 2 + 2 = 3.8
    tx = ptx.sgd(lr=0.1, momentum=0.9, nesterov=True)
    u1, _ = tx.update(g, tx.init(p), p)
    close(u1, [-0.38])  # d + 0.9 b = 2 + 1.8
    tx = ptx.sgd(lr=0.1, momentum=0.5, dampening=0.5, weight_decay=1.0)
    u1, state = tx.update(g, tx.init(p), p)
    u2, _ = tx.update(g, state, p)
    close(u1, [-0.3])  # d = 2 + 1 * 1 = 3, first step b = d
    close(u2, [-0.3])  # b = 0.5 * 3 + (1 - 0.5) * 3 = 3


def test_adam_first_step_is_minus_lr_times_g_over_abs_g_plus_eps():
    # m_hat = g, v_hat = g^2: update = -lr g / (|g| + eps)
    p = t([1.0, -1.0])
    u = once(ptx.adam(lr=0.1, eps=0.5), t([2.0, -0.5]), p)
    close(u, [-0.1 * 2 / 2.5, 0.1 * 0.5 / 1.0])


# ----------------------------------------------------------------------------- chain, apply_updates


def test_chain_applies_its_transforms_left_to_right():
    x = t([1.0, -1.0])
    close(once(ptx.chain(ptx.scale(2.0), ptx.add(1.0)), x), [3.0, -1.0])
    close(once(ptx.chain(ptx.add(1.0), ptx.scale(2.0)), x), [4.0, 0.0])
    close(once(ptx.chain(ptx.chain(ptx.add(1.0)), ptx.chain(), ptx.scale(2.0)), x), [4.0, 0.0])


def test_chain_state_is_the_tuple_of_inner_states():
    tx = ptx.chain(ptx.sign(), ptx.top_q(0.5, seed=4), ptx.chain(ptx.scale(1.0)))
    state = tx.init(None)
    assert state == (ptx.EmptyState(), ptx.TopQState(4, 0), (ptx.EmptyState(),))
    _, state = tx.update(t([1.0, 2.0]), state)
    assert state == (ptx.EmptyState(), ptx.TopQState(4, 1), (ptx.EmptyState(),))


def test_empty_chain_is_the_identity():
    tx = ptx.chain()
    x = {"a": t([1.0, 2.0])}
    out, state = tx.update(x, tx.init(x))
    assert out is x and state == ()


def test_apply_updates_adds_leafwise_and_skips_none_updates():
    params = {"w": t([1.0, 2.0]), "b": t(0.5), "n": [t([3.0])]}
    out = ptx.apply_updates(params, {"w": t([0.5, -0.5]), "b": None, "n": [t([-3.0])]})
    close(out["w"], [1.5, 1.5])
    assert out["b"] is params["b"]
    close(out["n"][0], [0.0])


@pytest.mark.parametrize(
    "param_dtype, update_dtype",
    [(torch.float64, torch.float32), (torch.float32, torch.float64), (torch.bfloat16, torch.float32)],
    ids=str,
)
def test_apply_updates_keeps_the_parameter_dtype(param_dtype, update_dtype):
    out = ptx.apply_updates([torch.ones(2, dtype=param_dtype)], [torch.full((2,), 0.5, dtype=update_dtype)])
    assert out[0].dtype == param_dtype
    torch.testing.assert_close(out[0], torch.full((2,), 1.5, dtype=param_dtype), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("q", [1.0, 63 / 64, 57 / 64, 1 / 64, 0.0])
def test_l1q_lmo_normalizes_kept_signs_exactly_as_sign_of_top_q_then_l1_normalize(dtype, q):
    # lmo_l1q normalizes the kept signs before scattering them; the L1 norm of
    # +-1s is an exact count in any summation order, so the shortcut must be bit-exact.
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(int(q * 64)), device="cpu").to(DEVICE).to(dtype)
    x[1] = 0  # a zero datum
    x[2, :40] = 0  # fewer non-zeros than some keeps
    chained = ptx.chain(ptx.top_q(q), ptx.sign(), ptx.normalize(p=1, eps=1e-38))
    expected, _ = chained.update(x, chained.init(None))
    fused = ptx.lmo_l1q(q, eps=1e-38)
    assert torch.equal(fused.update(x, fused.init(None))[0], expected)


# ----------------------------------------------------------------------------- fresh outputs

NO_OP_SETTINGS = [
    ("scale(1)", lambda: ptx.scale(1.0)),
    ("add(0)", lambda: ptx.add(0.0)),
    ("clamp wide", lambda: ptx.clamp(min=-100.0, max=100.0)),
    ("normalize eps huge", lambda: ptx.normalize(2, eps=1e3)),
    ("top_q(0)", lambda: ptx.top_q(0.0)),
    ("top_q(0) per element", lambda: ptx.top_q(0.0, param_ndim=0)),
    ("top_q(1)", lambda: ptx.top_q(1.0)),
    ("lmo_l1q(0)", lambda: ptx.lmo_l1q(q=0.0)),
    ("lmo_l2", lambda: ptx.lmo_l2()),
    ("sgd(0)", lambda: ptx.sgd(0.0)),
    ("projected l2, inside", lambda: ptx.projected(ptx.project_l2_ball, epsilon=1e3)),
    ("projected box, inside", lambda: ptx.projected(ptx.project_box, lower=-100.0, upper=100.0)),
]


@pytest.mark.parametrize("name, build", NO_OP_SETTINGS, ids=[n for n, _ in NO_OP_SETTINGS])
def test_updates_never_share_memory_with_the_inputs_even_when_nothing_changes(name, build):
    # A pure transform returns new tensors: a caller may write into its updates (or
    # its gradients) without the other changing.
    grads, params = t(X), t(X) * 0.1
    tx = build()
    out = tx.update([grads], tx.init([params]), [params])[0][0]
    for source in (grads, params):
        assert out.untyped_storage().data_ptr() != source.untyped_storage().data_ptr(), name


@pytest.mark.parametrize(
    "project, options",
    [(ptx.project_l2_ball, {"epsilon": 1e3}), (ptx.project_l1_ball, {"epsilon": 1e3}),
     (ptx.project_linf_ball, {"epsilon": 1e3}), (ptx.project_box, {"lower": -100.0, "upper": 100.0})],
)
def test_projections_of_points_inside_return_new_tensors(project, options):
    x = t(X)
    out = project(x, **options)
    close(out, X)
    assert out.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
