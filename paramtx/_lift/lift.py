"""The entry points of the lift: an op on every datum of a tensor, pure or in place.

Plain tensors go to :mod:`paramtx._lift.dense`, DTensors whose data the op
must see whole to :mod:`paramtx._lift.sharded`; both give the same result.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from paramtx._lift import dense, settings, sharded
from paramtx._lift.dtensor import is_dtensor
from paramtx._lift.ops import DatumOp, Op


def map_data(api: str, op: Op, param_ndim: Optional[int], *tensors: torch.Tensor, **options: Any) -> torch.Tensor:
    """``op`` on each datum of the same-shaped ``tensors`` (the data of ``tensors[0]``
    by ``param_ndim``): a new tensor of the shape and dtype of ``tensors[0]``.

    ``api`` names the caller in error messages (e.g. a ``param_ndim`` that does not fit).
    """
    if _sharded(op, tensors[0], options):
        return sharded.map_data(api, op, param_ndim, *tensors, **options)
    return dense.map_data(api, op, param_ndim, *tensors, **options)


def apply_(api: str, op: Op, param_ndim: Optional[int], target: torch.Tensor, *others: torch.Tensor, **options: Any) -> None:
    """:func:`map_data` written into ``target`` (the first input), in place."""
    if _sharded(op, target, options):
        target.copy_(sharded.map_data(api, op, param_ndim, target, *others, **options))
        return
    dense.apply_(api, op, param_ndim, target, *others, **options)


def _sharded(op: Op, x: torch.Tensor, options: dict) -> bool:
    # (DTensor runs an element-wise op shard by shard, unless a setting has a value per datum
    # or element: each rank then needs its part of the setting)
    if not is_dtensor(x):
        return False
    return not (isinstance(op, DatumOp) and op.elementwise) or settings.spread(options)
