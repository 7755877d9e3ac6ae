"""The shims' in-place writes equal the core's pure datum functions, bit for bit.

The shims write into ``.grad`` and parameters in place (no full-size
temporaries); each in-place path is defined as equal to a pure function of
the functional core, which is what these tests check, edge cases included.
"""

from __future__ import annotations

import pytest
import torch

from paramtx import _frank_wolfe, _lmo, _normalize, _projections, _top_q
from paramtx.optim._lp_space import l1q_lmo_
from paramtx.optim._misc import top_q_


def _rows(seed: int, n: int = 6, d: int = 10, dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(n, d, generator=generator, dtype=dtype)
    rows[0] = 0.0  # an all-zero datum
    rows[1, ::2] = 0.0  # fewer nonzeros than some kept counts
    rows[2, 3] = -0.0
    return rows


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality, signed zeros included."""
    return torch.equal(a, b) and torch.equal(torch.signbit(a), torch.signbit(b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("keep", [0, 1, 3, 5, 9, 10])
def test_top_q_in_place_equals_top_q_datum(keep, dtype):
    rows = _rows(keep, dtype=dtype)
    assert _same(top_q_(rows.clone(), keep), _top_q.top_q_datum(rows, keep=keep))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("keep", [0, 1, 3, 5, 9, 10])
def test_l1q_lmo_in_place_equals_l1q_lmo_datum(keep, dtype):
    rows = _rows(keep + 10, dtype=dtype)
    eps = _normalize.TINY
    result = rows.clone()
    l1q_lmo_(result, keep, eps)
    assert _same(result, _lmo.l1q_lmo_datum(rows, keep=keep, eps=eps))


@pytest.mark.parametrize("p", [1.0, 2.0, 3.5, float("inf")])
def test_in_place_normalization_equals_normalize_datum(p):
    rows = _rows(3)
    result = rows.clone()
    result.div_(_normalize.normalize_divisor(result, p=p, eps=_normalize.TINY))
    assert _same(result, _normalize.normalize_datum(rows, p=p, eps=_normalize.TINY))


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 100.0])
def test_in_place_l2_projection_equals_l2_ball_datum(epsilon):
    rows = _rows(4) * 3
    result = rows.clone()
    result.mul_(_projections.l2_ball_scale(result, epsilon=epsilon))
    assert _same(result, _projections.l2_ball_datum(rows, epsilon=epsilon))


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0 / 7.0, 0.0])
def test_in_place_frank_wolfe_step_equals_frank_wolfe_point(alpha):
    param, direction = _rows(5), _rows(6).sign()
    keep, step = _frank_wolfe.frank_wolfe_weights(alpha, 1.7)
    result = param.clone()
    result.mul_(keep).add_(direction * step)
    assert _same(result, _frank_wolfe.frank_wolfe_point(param, direction, alpha, 1.7))
