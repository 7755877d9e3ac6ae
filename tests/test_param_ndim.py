"""The ``param_ndim`` rule (DESIGN.md, "param_ndim"): how a tensor is seen as ``(N, *datum)``."""

from __future__ import annotations

import pytest
import torch

import paramtx as ptx
from paramtx._lift.param_ndim import batch_shape, datum_ndim

# The table of DESIGN.md (identical to rai-toolbox's ``_to_batch`` docstring), for x of shape (3, 5, 2).
DESIGN_TABLE = [
    (0, (30, 1)),
    (1, (15, 2)),
    (2, (3, 5, 2)),
    (-1, (3, 5, 2)),
    (-2, (15, 2)),
    (-3, (30, 1)),
    (None, (1, 3, 5, 2)),
]


@pytest.mark.parametrize("param_ndim, expected", DESIGN_TABLE, ids=str)
def test_batch_shape_follows_the_design_table_for_shape_3_5_2(param_ndim, expected):
    assert batch_shape("api", torch.Size([3, 5, 2]), param_ndim) == expected


def test_param_ndim_3_on_a_3d_tensor_is_one_datum_like_none():
    # 3 = ndim: the datum is the whole tensor, as with None.
    assert batch_shape("api", torch.Size([3, 5, 2]), 3) == (1, 3, 5, 2)


@pytest.mark.parametrize("param_ndim", [None, 0, 1, -1, 2, -2, 3, -3, 7], ids=str)
def test_a_scalar_is_one_datum_whatever_param_ndim(param_ndim):
    assert datum_ndim("api", torch.Size([]), param_ndim) == 0
    assert batch_shape("api", torch.Size([]), param_ndim) == (1, 1)
    # and the transforms treat it so: normalize maps a non-zero scalar to its sign
    tx = ptx.normalize(p=2, param_ndim=param_ndim)
    assert tx.update(torch.tensor(-4.0), tx.init(None))[0].item() == -1.0


@pytest.mark.parametrize(
    "shape, param_ndim, expected",
    [
        ((4,), 0, (4, 1)),
        ((4,), 1, (1, 4)),
        ((4,), -1, (4, 1)),
        ((4,), None, (1, 4)),
        ((2, 3, 4, 5), 1, (24, 5)),
        ((2, 3, 4, 5), -1, (2, 3, 4, 5)),
        ((2, 3, 4, 5), -3, (24, 5)),
        ((2, 3, 4, 5), 4, (1, 2, 3, 4, 5)),
        ((2, 3, 4, 5), -4, (120, 1)),
        ((0, 3), -1, (0, 3)),
        ((3, 0), 1, (3, 0)),
    ],
    ids=str,
)
def test_batch_shape_of_other_ranks(shape, param_ndim, expected):
    assert batch_shape("api", torch.Size(shape), param_ndim) == expected


@pytest.mark.parametrize("param_ndim", [4, -4, 10, -10])
def test_param_ndim_larger_than_ndim_is_a_value_error_naming_both(param_ndim):
    with pytest.raises(ValueError, match=rf"param_ndim={param_ndim}\b.*ndim=3\b"):
        batch_shape("normalize", torch.Size([3, 5, 2]), param_ndim)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ptx.normalize(2, param_ndim=3),
        lambda: ptx.top_q(0.5, param_ndim=-3),
        lambda: ptx.lmo_l1(param_ndim=3),
        lambda: ptx.lmo_l1q(0.5, param_ndim=3),
        lambda: ptx.lmo_l2(param_ndim=-3),
    ],
    ids=["normalize", "top_q", "lmo_l1", "lmo_l1q", "lmo_l2"],
)
def test_transforms_reject_a_param_ndim_too_large_for_a_leaf_naming_both(make):
    tx = make()
    with pytest.raises(ValueError, match=r"param_ndim=-?3\b.*ndim=2\b"):
        tx.update({"w": torch.ones(2, 2)}, tx.init(None))


@pytest.mark.parametrize("projection", [ptx.project_l2_ball, ptx.project_l1_ball], ids=lambda f: f.__name__)
def test_projections_reject_a_param_ndim_too_large_naming_both(projection):
    with pytest.raises(ValueError, match=rf"{projection.__name__}: param_ndim=2\b.*ndim=1\b"):
        projection(torch.ones(3), epsilon=1.0, param_ndim=2)
