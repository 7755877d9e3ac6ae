"""The lift for plain tensors: an op on every datum, pure or in place, any layout.

A tensor is seen as the ``(N, D)`` matrix of its flattened data (the
``param_ndim`` rule, :func:`paramtx.to_batch`). Ops use only reductions,
sorts, gathers and scatters along the last dim, so one call on the matrix
computes every datum at once: the row-batched path, which skips vmap's per-call
overhead (it matters for models with many small tensors). The reference
semantics is ``torch.func.vmap`` over the data; within :func:`vmap_reference`
the lift takes that path instead, and the tests check that the two agree bit
for bit.

In place, the result is written into the tensor's own memory through its
``(N, D)`` view. A tensor with no such view (channels-last, transposed) is
computed from a contiguous copy and copied back.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Optional, Sequence

import torch

from paramtx._lift import numerics, settings
from paramtx._lift.ops import DatumOp, NormOp, Op
from paramtx._lift.param_ndim import rows_shape, view_or_none

_VMAP_REFERENCE: contextvars.ContextVar[bool] = contextvars.ContextVar("paramtx_vmap_reference", default=False)


@contextlib.contextmanager
def vmap_reference() -> Iterator[None]:
    """Within this block (in this thread or task), ops are lifted with ``torch.func.vmap``."""
    token = _VMAP_REFERENCE.set(True)
    try:
        yield
    finally:
        _VMAP_REFERENCE.reset(token)


def vmap_reference_active() -> bool:
    """Whether :func:`vmap_reference` is in force (never while ``torch.compile`` traces:
    dynamo cannot read a ``ContextVar``, and the reference is an eager-mode check)."""
    return not torch.compiler.is_compiling() and _VMAP_REFERENCE.get()


def map_data(api: str, op: Op, param_ndim: Optional[int], *tensors: torch.Tensor, **options: Any) -> torch.Tensor:
    """``op`` on each datum of the same-shaped ``tensors``: a new tensor of the shape and dtype of ``tensors[0]``.

    Options may be settings given as tensors (:mod:`paramtx._lift.settings`), laid out here.
    """
    return _map(api, op, param_ndim, tensors, options, None)


def apply_(api: str, op: Op, param_ndim: Optional[int], target: torch.Tensor, *others: torch.Tensor, **options: Any) -> None:
    """``op`` on each datum of ``target`` (and ``others``), written into ``target``."""
    _map(api, op, param_ndim, (target, *others), options, target)


def _map(
    api: str, op: Op, param_ndim: Optional[int], tensors: Sequence[torch.Tensor], options: dict, out: Optional[torch.Tensor]
) -> torch.Tensor:
    """:func:`map_data` (``out=None``) or :func:`apply_` (into ``out``, the first tensor).

    Tensor settings among ``options`` are laid out for the form the op runs in,
    and their poison added (see :mod:`paramtx._lift.settings`).
    """
    x = tensors[0]
    elementwise = isinstance(op, DatumOp) and op.elementwise
    laid = None
    if settings.has_tensors(options):
        laid = settings.lay_out(api, options, x.shape, param_ndim, elementwise=elementwise, like=x)
    plain = options if laid is None else laid.plain
    if isinstance(op, DatumOp) and elementwise:
        return _with_poison(_elementwise(op, tensors, plain, out), laid, out)
    n, d = rows_shape(api, x.shape, param_ndim)
    if n * d == 0:  # no datum has an element: nothing to compute
        return x if out is not None else x.clone()
    view = None if out is None else view_or_none(out, (n, d))
    if out is not None and view is None:  # no (N, D) view of this layout: compute from a copy, write back
        return out.copy_(_map(api, op, param_ndim, tensors, options, None))
    rows = [view if view is not None else x.reshape(n, d), *(t.reshape(n, d) for t in tensors[1:])]
    result = _with_poison(_on_rows(op, rows, plain, view, laid), laid, view)
    return result.reshape(x.shape) if out is None else out


def _with_poison(value: torch.Tensor, laid: Optional[settings.Laid], out: Optional[torch.Tensor]) -> torch.Tensor:
    """``value`` with the poison of its tensor settings added (NaN data where a setting is NaN)."""
    if laid is None or laid.poison is None:
        return value
    return _poisoned(value, laid.poison.to(value.dtype), out)


def _on_rows(
    op: Op, rows: Sequence[torch.Tensor], options: dict, out: Optional[torch.Tensor], laid: Optional[settings.Laid] = None
) -> torch.Tensor:
    if vmap_reference_active():
        names, mapped = (laid.mapped_names, laid.mapped) if laid is not None else ((), ())
        count = len(rows)

        def one_datum(*args: torch.Tensor) -> torch.Tensor:
            # each call sees one datum, and its value of every per-datum (per-element) setting
            return evaluate(op, args[:count], {**options, **dict(zip(names, args[count:]))}, None, -1, False)

        result = torch.func.vmap(one_datum)(*rows, *mapped)
        return result if out is None else out.copy_(result)
    return evaluate(op, rows, options, out, -1, numerics.may_inspect(rows[0]))


def evaluate(
    op: Op, data: Sequence[torch.Tensor], options: dict, out: Optional[torch.Tensor], dims: numerics.Dims, inspect: bool
) -> torch.Tensor:
    """``op`` on ``data`` whose datum spans ``dims``, under the numerics policy, into ``out`` if given.

    (Shared with the sharded lift, which passes DTensors and their datum dims.)
    """
    x = data[0]
    if isinstance(op, NormOp):
        norm = numerics.scaled_norm(x, op.order(**options), dims, inspect)
        poison = norm.poison
        result = op.finish(norm.y, norm.norm, norm.scale, **options)
    else:
        result = op.compute(*data, **options)  # nothing written yet: the inputs are intact
        # every non-finite value of a datum is in its witness, if the op gives one
        evidence = [result.witness] if result.witness is not None and len(data) == 1 else data
        poison = None
        if not (inspect and numerics.all_finite(*evidence)):
            poison = _sum(numerics.datum_poison(t, dims) for t in evidence)
    value = result.materialize(out, x.dtype)
    return value if poison is None else _poisoned(value, poison.to(x.dtype), out)


def _elementwise(op: DatumOp, tensors: Sequence[torch.Tensor], options: dict, out: Optional[torch.Tensor]) -> torch.Tensor:
    x = tensors[0]
    poison = None
    if not op.ieee and not (numerics.may_inspect(x) and numerics.all_finite(*tensors)):
        poison = _sum(numerics.element_poison(t) for t in tensors)
    value = op.compute(*tensors, **options).materialize(out, x.dtype)
    return value if poison is None else _poisoned(value, poison.to(x.dtype), out)


def _poisoned(value: torch.Tensor, poison: torch.Tensor, out: Optional[torch.Tensor]) -> torch.Tensor:
    # A new tensor on the pure path: ``value`` may be an input itself (an op that keeps it).
    return value + poison if out is None else out.add_(poison)


def _sum(terms: Any) -> torch.Tensor:
    total = None
    for term in terms:
        total = term if total is None else total + term
    assert total is not None  # an op has at least one input
    return total
