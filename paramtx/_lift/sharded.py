"""The lift for sharded tensors (``DTensor``, as FSDP2's ``fully_shard`` makes).

A ``DTensor`` parameter (or gradient) is one logical tensor whose elements live
on several ranks. An op must see each datum whole, so :func:`map_data` takes one
of three routes, all giving the unsharded result:

1. **On the shards** (no communication): every placement either replicates the
   tensor or shards a *batch* dim (a dim in front of the datum dims), so each
   rank holds whole data. This is FSDP2's usual case: ``Shard(0)`` with
   ``param_ndim=-1`` (or any ``param_ndim >= 0`` smaller than the ndim).
2. **Reduced across shards** (one all-reduce of one value per datum, and one
   more for the scale-safe norm's largest magnitude): the datum is split, and
   the op is a :class:`~paramtx._lift.ops.NormOp`. DTensor takes the norm over
   the datum dims, which yields a partial norm per rank and all-reduces it; the
   rest is per element.
3. **Gathered**: the datum is split and the op needs all of it at once (sorts,
   top-k, argmax). The mesh dims that split data are all-gathered
   (redistributed to ``Replicate``), the op runs on whole data, and the result
   is redistributed back to the input's placements (a local slice: no further
   communication).

``Partial`` placements (pending sums) are reduced first and the result is
replicated on those mesh dims: a per-datum map of a sum is not a sum.
Elementwise ops need nothing from here: DTensor applies them shard by shard.

Settings with a value per datum or per element (plain tensors, for the whole
logical tensor) are cut to each rank's block of data
(:func:`paramtx._lift.settings.block_of`), which is then computed whole: data
split across ranks are gathered for every op, norms included, and so are
element-wise ops' pending sums.
"""

from __future__ import annotations

from typing import Any, Optional, cast

import torch

from paramtx._lift import dense, settings
from paramtx._lift.ops import DatumOp, NormOp, Op
from paramtx._lift.param_ndim import datum_ndim


def _splits_data(placement: Any, first_datum_dim: int, ndim: int) -> bool:
    """Whether ``placement`` leaves some datum incomplete on a rank (or pending a sum)."""
    if placement.is_replicate():
        return False
    dim = getattr(placement, "dim", None)  # Shard and _StridedShard have one
    return dim is None or dim % ndim >= first_datum_dim


def _datum_splitters(api: str, x: Any, param_ndim: Optional[int]) -> list[bool]:
    """Per mesh dim, whether its placement splits the data of ``x`` across ranks."""
    first = x.ndim - datum_ndim(api, x.shape, param_ndim)
    return [_splits_data(pl, first, x.ndim) for pl in x.placements]


def route(op: Op, x: Any, param_ndim: Optional[int]) -> str:
    """The route :func:`map_data` takes for ``op`` on the DTensor ``x``:
    ``"shards"``, ``"reduce"`` or ``"gather"`` (see the module doc)."""
    if not any(_datum_splitters("route", x, param_ndim)):
        return "shards"
    # (data of one element, split only by a pending sum, have no dims to reduce over:
    # summed first, they are whole)
    spans_dims = datum_ndim("route", x.shape, param_ndim) > 0 or x.ndim == 0
    return "reduce" if isinstance(op, NormOp) and spans_dims else "gather"


def map_data(api: str, op: Op, param_ndim: Optional[int], *tensors: Any, **options: Any) -> Any:
    """:func:`paramtx._lift.dense.map_data` for DTensors: the unsharded result, laid out
    with the mesh and placements of ``tensors[0]`` (``Replicate`` where those are
    ``Partial``; see the module doc)."""
    from torch.distributed.tensor import DTensor, Replicate

    x = tensors[0]
    if settings.spread(options):
        return _with_spread_settings(api, op, param_ndim, tensors, options)
    if settings.has_tensors(options):  # 0-d: they broadcast as they are
        laid = settings.lay_out(api, options, x.shape, param_ndim, elementwise=False, like=x)
        out = map_data(api, op, param_ndim, *tensors, **laid.plain)
        return out if laid.poison is None else out + laid.poison.to(out.dtype)
    mesh, placements = x.device_mesh, tuple(x.placements)
    tensors = tuple(t if tuple(t.placements) == placements else t.redistribute(mesh, placements) for t in tensors)
    placements = tuple(Replicate() if pl.is_partial() else pl for pl in placements)  # of the result
    kind = route(op, x, param_ndim)
    stride = torch.empty(x.shape, device="meta").stride()  # the dense lift's results are contiguous

    if kind == "shards":
        out = dense.map_data(api, op, param_ndim, *(t.to_local() for t in tensors), **options)
        return DTensor.from_local(out, mesh, placements, shape=x.shape, stride=stride)

    if kind == "reduce":
        first = x.ndim - datum_ndim(api, x.shape, param_ndim)
        dims = tuple(range(first, x.ndim)) or (0,)  # (the second: a 0-d tensor, reshaped below)
        if x.ndim == 0:  # a 0-d tensor is one datum of one element
            tensors = tuple(t.reshape(1) for t in tensors)
        # DTensors in, a DTensor out (evaluate is typed for plain tensors)
        out = cast(DTensor, dense.evaluate(op, tensors, options, None, dims, inspect=False).reshape(x.shape))
        return out if tuple(out.placements) == placements else out.redistribute(mesh, placements)

    split = _datum_splitters(api, x, param_ndim)
    whole = tuple(Replicate() if splits else pl for pl, splits in zip(placements, split))
    local = [t.redistribute(mesh, whole).to_local() for t in tensors]
    out = dense.map_data(api, op, param_ndim, *local, **options)
    return DTensor.from_local(out, mesh, whole, shape=x.shape, stride=stride).redistribute(mesh, placements)


def _with_spread_settings(api: str, op: Op, param_ndim: Optional[int], tensors: tuple, options: dict) -> Any:
    """:func:`map_data` with settings of one value per datum or per element (plain tensors).

    Each rank computes on whole data with its block of every setting (no
    communication for the settings). So data split across ranks are gathered,
    even for a norm (the reduce route would need the settings laid out as
    DTensors); so are pending sums, and strided shards, whose local part is not
    one block of the tensor. An element-wise op is its own datum per element:
    it runs on the shards as they are.
    """
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    x = tensors[0]
    mesh, placements = x.device_mesh, tuple(x.placements)
    tensors = tuple(t if tuple(t.placements) == placements else t.redistribute(mesh, placements) for t in tensors)
    elementwise = isinstance(op, DatumOp) and op.elementwise
    splits = _datum_splitters(api, x, param_ndim)
    whole = tuple(
        pl if pl.is_replicate() or (type(pl) is Shard and (elementwise or not split)) else Replicate()
        for pl, split in zip(placements, splits)
    )
    local = [t.redistribute(mesh, whole).to_local() for t in tensors]
    sizes, offset = compute_local_shape_and_global_offset(x.shape, mesh, whole)
    blocks = settings.block_of(api, options, x.shape, param_ndim, sizes, offset)
    out = dense.map_data(api, op, param_ndim, *local, **blocks)
    stride = torch.empty(x.shape, device="meta").stride()
    result = DTensor.from_local(out, mesh, whole, shape=x.shape, stride=stride)
    placements = tuple(Replicate() if pl.is_partial() else pl for pl in placements)
    return result if whole == placements else result.redistribute(mesh, placements)
