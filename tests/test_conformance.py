"""One conformance battery: every op x path x dtype x layout x value class, each with its expected result.

Ops: the registry of ``ops_registry.py``. Paths: the public functional API
(pure), the lift writing in place (what the shims run), the op's torch.optim
shim, the vmap reference, DTensors (on a one-rank mesh, so every route runs in
this process), and ``torch.compile`` (``fullgraph=True``: no graph break).
Dtypes: float16, bfloat16, float32, float64. Layouts: contiguous,
channels-last and transposed (strides reversed). Values: one slice of the
tensor holds zeros, ties, magnitudes of 1e-30, of 1e30, a NaN, or infinities;
the rest is normal noise.

Expected results: the pure path is checked against the registry's float64
oracle (to within a few units of the dtype's rounding; a datum with a NaN or an
inf must come out all NaN, and leave the other data as they are). Every other
path is checked against the pure path: bit for bit where it runs the same
kernels (the lift's in-place form, the shims, the vmap reference), to within
rounding where its reductions may be ordered differently (DTensor, compiled).
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Optional

import pytest
import torch

import paramtx as ptx
from ops_registry import ENTRIES, OPS, OpEntry, check_selection
from paramtx._lift import lift
from paramtx._lift.dense import vmap_reference
from paramtx._lift.ops import DatumOp, NormOp
from ptx_testing import DEVICE, randn

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
LAYOUTS = ("contiguous", "channels_last", "transposed")
VALUES = ("zeros", "ties", "tiny", "huge", "nan", "inf")
SHAPE = (4, 3, 2, 5)
PARAM_NDIMS = (-1, 2)  # data of (3, 2, 5), or of (2, 5) with the first two dims merged into the batch

# Largest error of a result, relative to the largest magnitude of its datum's
# expected value: a few units of the dtype's rounding (2**-11, 2**-8, 2**-24, 2**-53),
# with room for the sums over the 30 elements of a datum.
TOLERANCE = {torch.float16: 4e-3, torch.bfloat16: 2e-2, torch.float32: 4e-6, torch.float64: 1e-13}


def _pattern(values: str, generator_seed: int) -> torch.Tensor:
    """The float64 content of slice ``x[1]`` for a value class."""
    noise = randn(SHAPE[1:], torch.float64, seed=generator_seed)
    if values == "zeros":
        return torch.zeros(SHAPE[1:], dtype=torch.float64)
    if values == "ties":
        return 0.5 * torch.where(noise > 0, 1.0, -1.0)
    if values == "tiny":
        return noise * 1e-30
    if values == "huge":
        return noise * 1e30
    if values == "nan":
        noise.view(-1)[7] = math.nan
        return noise
    if values == "inf":
        noise.view(-1)[7], noise.view(-1)[11] = math.inf, -math.inf
        return noise
    raise ValueError(values)


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last":
        out = x.contiguous(memory_format=torch.channels_last)
        assert not out.is_contiguous()
        return out
    if layout == "transposed":
        out = x.permute(3, 2, 1, 0).contiguous().permute(3, 2, 1, 0)  # the same tensor, strides reversed
        assert not out.is_contiguous()
        return out
    return x.contiguous()


def make_inputs(values: str, dtype: torch.dtype, layout: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, direction)``: the input, and a second input (an LMO direction) for two-input ops."""
    x = randn(SHAPE, torch.float64, seed=seed)
    x[1] = _pattern(values, seed + 1)
    direction = torch.sign(randn(SHAPE, torch.float64, seed=seed + 2))
    return _layout(x.to(dtype), layout), _layout(direction.to(dtype), layout)


def _rows(x: torch.Tensor, param_ndim: Optional[int]) -> torch.Tensor:
    return x.reshape(ptx.to_batch(torch.empty(x.shape, device="meta"), param_ndim).shape).flatten(1)


def _options(entry: OpEntry, x: torch.Tensor, param_ndim: Optional[int]) -> dict:
    return entry.options(ptx.to_batch(torch.empty(x.shape, device="meta"), param_ndim))


def assert_matches_oracle(entry: OpEntry, out: torch.Tensor, x: torch.Tensor, direction, param_ndim) -> None:
    """The pure result against the oracle, datum by datum (see the module doc)."""
    assert out.shape == x.shape and out.dtype == x.dtype, (out.shape, out.dtype)
    if entry.nan_policy != "datum":
        param_ndim = 0  # each element its own datum
    rows, out_rows = _rows(x, param_ndim).double().cpu(), _rows(out, param_ndim).double().cpu()
    other_rows = _rows(direction, param_ndim).double().cpu() if entry.two_inputs else None
    for i, (row, got) in enumerate(zip(rows, out_rows)):
        other = None if other_rows is None else other_rows[i]
        finite = bool(torch.isfinite(row).all()) and (other is None or bool(torch.isfinite(other).all()))
        if not finite:
            if entry.nan_policy == "ieee":
                assert not bool(torch.isfinite(got).all()), (i, row, got)
            else:
                assert bool(got.isnan().all()), f"datum {i} holds a NaN or inf but came out {got}"
            continue
        if entry.selects:
            check_selection(entry.name, got, row, x.dtype)
            continue
        want = entry.oracle(row, other) if entry.two_inputs else entry.oracle(row)
        # rounding errors scale with the largest value computed: the result, or an input
        # (a Frank-Wolfe step may cancel its two terms)
        terms = [want.abs().max(), row.abs().max()] + ([other.abs().max()] if other is not None else [])
        scale = max(float(max(terms)), torch.finfo(x.dtype).tiny)
        error = float((got - want).abs().max()) / scale
        assert error <= TOLERANCE[x.dtype], f"datum {i}: relative error {error:.3g}\n got {got}\n want {want}"


def assert_same(got: torch.Tensor, want: torch.Tensor, exact: bool) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    if exact:
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
        return
    finite = want.isfinite()
    assert torch.equal(got.isfinite(), finite)
    scale = max(float(want[finite].abs().max()) if finite.any() else 0.0, 1.0)
    torch.testing.assert_close(got[finite], want[finite], rtol=TOLERANCE[want.dtype], atol=TOLERANCE[want.dtype] * scale)


def _pure(entry: OpEntry, x, direction, param_ndim):
    return entry.pure(x, param_ndim, direction if entry.two_inputs else None)


def _in_place(entry: OpEntry, x, direction, param_ndim):
    target = x.clone()  # keeps the layout
    others = (direction,) if entry.two_inputs else ()
    lift.apply_("test", entry.op, param_ndim, target, *others, **_options(entry, x, param_ndim))
    assert target.stride() == x.stride(), "in place must keep the layout"
    return target


CASES = [
    pytest.param(entry, dtype, layout, param_ndim, id=f"{entry.name}-{str(dtype)[6:]}-{layout}-{param_ndim}")
    for entry in ENTRIES
    for dtype in DTYPES
    for layout in LAYOUTS
    for param_ndim in PARAM_NDIMS
]


def test_registry_covers_every_op():
    import paramtx._transforms as transforms
    import pkgutil, importlib

    defined = set()
    for module in pkgutil.iter_modules(transforms.__path__):
        for value in vars(importlib.import_module(f"paramtx._transforms.{module.name}")).values():
            if isinstance(value, (DatumOp, NormOp)):
                defined.add(value)
    assert defined == set(OPS)
    assert {entry.op for entry in ENTRIES} == set(OPS)


@pytest.mark.parametrize("entry, dtype, layout, param_ndim", CASES)
def test_pure_path_matches_the_oracle(entry: OpEntry, dtype, layout, param_ndim):
    for values in VALUES:
        x, direction = make_inputs(values, dtype, layout)
        assert_matches_oracle(entry, _pure(entry, x, direction, param_ndim), x, direction, param_ndim)


@pytest.mark.parametrize("entry, dtype, layout, param_ndim", CASES)
def test_in_place_path_equals_the_pure_path(entry: OpEntry, dtype, layout, param_ndim):
    for values in VALUES:
        x, direction = make_inputs(values, dtype, layout)
        want = _pure(entry, x, direction, param_ndim)
        assert_same(_in_place(entry, x, direction, param_ndim), want, entry.exact_pure)


@pytest.mark.parametrize("entry, dtype, layout, param_ndim", [c for c in CASES if c.values[0].shim is not None])
def test_shim_path_equals_the_in_place_path(entry: OpEntry, dtype, layout, param_ndim):
    for values in VALUES:
        x, direction = make_inputs(values, dtype, layout)
        got = entry.shim(x, param_ndim, direction)
        assert got.stride() == x.stride(), "a shim must keep the parameter's layout"
        assert_same(got, _in_place(entry, x, direction, param_ndim), exact=True)


@pytest.mark.parametrize("entry, dtype, layout, param_ndim", CASES)
def test_vmap_reference_path_equals_the_pure_path(entry: OpEntry, dtype, layout, param_ndim):
    for values in VALUES:
        x, direction = make_inputs(values, dtype, layout)
        want = _pure(entry, x, direction, param_ndim)
        with vmap_reference():
            assert_same(_pure(entry, x, direction, param_ndim), want, exact=True)
            assert_same(_in_place(entry, x, direction, param_ndim), want, entry.exact_pure)


# ----------------------------------------------------------------------------- DTensor


@pytest.fixture(scope="module")
def mesh():
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if dist.is_initialized():
        pytest.skip("a process group already runs in this process")
    with tempfile.TemporaryDirectory() as folder:
        backend = "nccl" if DEVICE.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"file://{folder}/store", rank=0, world_size=1)
        try:
            yield init_device_mesh(DEVICE.type, (1,))
        finally:
            dist.destroy_process_group()


@pytest.mark.parametrize("placement", ["Shard(0)", "Shard(1)", "Shard(3)"])
@pytest.mark.parametrize(
    "entry, dtype, layout, param_ndim",
    [c for c in CASES if c.values[2] != "transposed" and c.values[0].name != "frank_wolfe_step"],
)
def test_dtensor_path_equals_the_pure_path(mesh, entry: OpEntry, dtype, layout, param_ndim, placement):
    # Shard(0) keeps data whole (the "shards" route); Shard(1) and Shard(3) split the data
    # of param_ndim=-1 (a norm is reduced across shards, anything else gathered).
    from torch.distributed.tensor import Shard, distribute_tensor

    dim = int(placement[6:-1])
    for values in VALUES:
        x, direction = make_inputs(values, dtype, layout)
        want = _pure(entry, x, direction, param_ndim)
        got = _pure(entry, distribute_tensor(x, mesh, [Shard(dim)]), None, param_ndim)
        assert list(got.placements) == [Shard(dim)]
        assert_same(got.full_tensor(), want, exact=False)
        target = distribute_tensor(x, mesh, [Shard(dim)])
        lift.apply_("test", entry.op, param_ndim, target, **_options(entry, x, param_ndim))
        assert_same(target.full_tensor(), want, exact=False)


# ----------------------------------------------------------------------------- compiled


@pytest.mark.parametrize("entry", ENTRIES, ids=repr)
def test_compiled_path_matches_the_pure_path_without_graph_breaks(entry: OpEntry):
    # aot_eager: dynamo's trace and AOT autograd's functional graph, run by eager kernels
    # (inductor's code generation is covered, on fewer cases, by test_compile.py).
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda x, direction: _pure(entry, x, direction, -1), backend="aot_eager", fullgraph=True, dynamic=False
    )
    with torch._dynamo.config.patch(cache_size_limit=64):
        for dtype in DTYPES:
            for layout in ("contiguous", "channels_last"):
                for values in VALUES:
                    x, direction = make_inputs(values, dtype, layout)
                    assert_same(compiled(x, direction), _pure(entry, x, direction, -1), exact=False)
