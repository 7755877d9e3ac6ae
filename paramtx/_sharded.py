"""Per-datum transforms on sharded tensors (``DTensor``, as FSDP2's ``fully_shard`` makes).

A ``DTensor`` parameter (or gradient) is one logical tensor whose elements
live on several ranks. Every per-datum transform must see the whole datum, so
:func:`paramtx._param_ndim.map_data` hands DTensors to :func:`map_data` here,
which takes one of three routes, all giving the unsharded result:

1. **On the shards** (no communication): every placement either replicates
   the tensor or shards a *batch* dim (a dim in front of the datum dims), so
   each rank holds whole data. This is FSDP2's usual case: ``Shard(0)`` with
   ``param_ndim=-1`` (or any ``param_ndim >= 0`` smaller than the ndim).
2. **Reduced across shards** (one all-reduce of one value per datum): the
   datum is split, and the datum function's only cross-element step is an Lp
   norm (``normalize``, ``lmo_l2``, ``project_l2_ball``). The norm is taken by
   DTensor over the datum dims, which yields a partial norm per rank and
   all-reduces it; the rest is per element.
3. **Gathered**: the datum is split and the maths needs all of it at once
   (sort-based ``project_l1_ball``, ``top_q``/``lmo_l1q``'s top-k,
   ``lmo_l1``'s argmax). The mesh dims that split data are all-gathered
   (redistributed to ``Replicate``), the datum function runs on whole data,
   and the result is redistributed back to the input's placements (a local
   slice: no further communication).

Partial placements (pending sums) are reduced first and the result is
replicated on those mesh dims: a per-datum map of a sum is not a sum. Per-element
transforms (``sign``, ``clamp``, ``scale``, ``sgd``, ...) need nothing from here:
DTensor applies them shard by shard.

This module never imports ``torch.distributed.tensor`` itself (it costs half a
second): if nobody has imported it, no tensor can be a DTensor.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeGuard, cast

import torch

from paramtx import _param_ndim

if TYPE_CHECKING:  # not at run time: see the module doc
    from torch.distributed.tensor import DTensor

_DTENSOR_MODULE = "torch.distributed.tensor"


def is_dtensor(x: Any) -> TypeGuard[DTensor]:
    """Whether ``x`` is a ``DTensor`` (without importing ``torch.distributed.tensor``)."""
    module = sys.modules.get(_DTENSOR_MODULE)
    return module is not None and isinstance(x, module.DTensor)


def _splits_data(placement: Any, first_datum_dim: int, ndim: int) -> bool:
    """Whether ``placement`` leaves some datum incomplete on a rank (or pending a sum)."""
    if placement.is_replicate():
        return False
    dim = getattr(placement, "dim", None)  # Shard and _StridedShard have one
    return dim is None or dim % ndim >= first_datum_dim


@functools.cache
def _across_shards() -> frozenset[Callable[..., torch.Tensor]]:
    """Datum functions whose only cross-element step is an Lp norm; they take the
    datum ``dims`` of an unflattened tensor, so DTensor can reduce across shards."""
    from paramtx._normalize import normalize_datum
    from paramtx._projections import l2_ball_datum

    return frozenset({normalize_datum, l2_ball_datum})


def _datum_splitters(api: str, x: Any, param_ndim: Optional[int]) -> list[bool]:
    """Per mesh dim, whether its placement splits the data of ``x`` across ranks."""
    first = x.ndim - _param_ndim.datum_ndim(api, x.shape, param_ndim)
    return [_splits_data(pl, first, x.ndim) for pl in x.placements]


def route(datum_fn: Callable[..., torch.Tensor], x: Any, param_ndim: Optional[int]) -> str:
    """The route :func:`map_data` takes for ``datum_fn`` on the DTensor ``x``:
    ``"shards"``, ``"reduce"`` or ``"gather"`` (see the module doc)."""
    if not any(_datum_splitters("route", x, param_ndim)):
        return "shards"
    return "reduce" if datum_fn in _across_shards() else "gather"


def map_data(
    api: str,
    datum_fn: Callable[..., torch.Tensor],
    param_ndim: Optional[int],
    *tensors: Any,
    **options: object,
) -> Any:
    """:func:`paramtx._param_ndim.map_data` for DTensors: the unsharded result, laid
    out with the mesh and placements of ``tensors[0]`` (``Replicate`` where
    those are ``Partial``; see the module doc)."""
    from torch.distributed.tensor import DTensor, Replicate

    x = tensors[0]
    mesh, placements = x.device_mesh, tuple(x.placements)
    tensors = tuple(t if tuple(t.placements) == placements else t.redistribute(mesh, placements) for t in tensors)
    placements = tuple(Replicate() if pl.is_partial() else pl for pl in placements)  # of the result
    splitters = _datum_splitters(api, x, param_ndim)
    stride = torch.empty(x.shape, device="meta").stride()  # map_data's results are contiguous

    if not any(splitters):  # route "shards"
        out = _param_ndim.map_data(api, datum_fn, param_ndim, *(t.to_local() for t in tensors), **options)
        return DTensor.from_local(out, mesh, placements, shape=x.shape, stride=stride)

    if datum_fn in _across_shards():  # route "reduce"
        first = x.ndim - _param_ndim.datum_ndim(api, x.shape, param_ndim)
        # DTensor in, DTensor out (datum_fn is typed for plain tensors)
        out = cast(DTensor, datum_fn(x, dims=tuple(range(first, x.ndim)), **options))
        return out if tuple(out.placements) == placements else out.redistribute(mesh, placements)

    # route "gather"
    whole = tuple(Replicate() if split else pl for pl, split in zip(placements, splitters))
    local = [t.redistribute(mesh, whole).to_local() for t in tensors]
    out = _param_ndim.map_data(api, datum_fn, param_ndim, *local, **options)
    return DTensor.from_local(out, mesh, whole, shape=x.shape, stride=stride).redistribute(mesh, placements)


def local_tensor(x: torch.Tensor) -> torch.Tensor:
    """This rank's part of a DTensor (``x`` itself otherwise): what memory checks look at."""
    return x.to_local() if is_dtensor(x) else x


def same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` (for DTensors, their parts on this rank) are the same view of memory."""
    a, b = local_tensor(a), local_tensor(b)
    return a.data_ptr() == b.data_ptr() and a.stride() == b.stride()


def same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` (for DTensors, their parts on this rank) share a storage."""
    return local_tensor(a).untyped_storage().data_ptr() == local_tensor(b).untyped_storage().data_ptr()
