"""One battery for every shim of the registry (``shims_registry.py``).

Each entry is checked for: every float dtype kept, finite parameters from
finite gradients and the constraint set held; channels-last and transposed
parameters (for every ``param_ndim``, including those that merge dims whose
strides allow no view) giving exactly the contiguous result and keeping their
layout; a NaN or inf gradient never giving a finite step; and its transform
passes tracing under ``torch.compile`` to one graph each, ``dq > 0`` included.
"""

from __future__ import annotations

import pytest
import torch

import paramtx as ptx
import paramtx.optim as pto
from ptx_testing import DEVICE, randn
from shims_registry import SHIMS, ShimEntry, starting_point

SHAPE = (4, 3, 2, 5)  # a conv weight's shape: (out, in, kh, kw)
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def test_registry_covers_every_shim():
    covered = {entry.cls.__name__ for entry in SHIMS}
    assert covered == set(pto.__all__), set(pto.__all__) ^ covered


def _build(entry: ShimEntry, params, param_ndim="default", **kwargs):
    if param_ndim != "default" and entry.takes_param_ndim:
        kwargs["param_ndim"] = param_ndim
    if entry.inner_kwargs:
        kwargs.setdefault("lr", 0.1)
    return entry.build(params, **kwargs)


def _params(entry: ShimEntry, dtype=torch.float32, layout="contiguous"):
    x = starting_point(entry, SHAPE, dtype).to(DEVICE)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = x.permute(3, 2, 1, 0).contiguous().permute(3, 2, 1, 0)
    return [torch.nn.Parameter(x)]


def _set_grad(param: torch.nn.Parameter, step: int) -> None:
    grad = randn(SHAPE, param.dtype, seed=100 + step)
    param.grad = torch.empty_like(param).copy_(grad)  # the parameter's layout, as autograd gives


def _assert_in_set(entry: ShimEntry, optimizer) -> None:
    if entry.in_set is None:
        return
    for group in optimizer.param_groups:
        for param in group["params"]:
            batch = ptx.to_batch(param.detach().contiguous(), group.get("param_ndim", None))
            slack = 4 * torch.finfo(param.dtype).eps  # the bounds, and the step, round to the dtype
            assert entry.in_set(batch, group, slack), f"{entry.name}: a parameter left its set"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("entry", SHIMS, ids=repr)
def test_every_shim_keeps_the_dtype_and_finite_steps_in_the_set(entry: ShimEntry, dtype):
    params = _params(entry, dtype)
    optimizer = _build(entry, params)
    for step in range(3):
        _set_grad(params[0], step)
        optimizer.step()
        assert params[0].dtype == dtype and params[0].grad.dtype == dtype
        assert bool(torch.isfinite(params[0]).all()), f"{entry.name}: a finite gradient gave a non-finite step"
        _assert_in_set(entry, optimizer)


@pytest.mark.parametrize("param_ndim", [-1, 2, -3, 0, None], ids=str)
@pytest.mark.parametrize("layout", ["channels_last", "transposed"])
@pytest.mark.parametrize("entry", SHIMS, ids=repr)
def test_every_layout_gives_the_contiguous_result_and_keeps_its_strides(entry: ShimEntry, layout, param_ndim):
    # param_ndim=2 or -3 merges (out, in) into the batch, which no view of a
    # channels-last or transposed tensor allows.
    reference, other = _params(entry), _params(entry, layout=layout)
    strides = other[0].stride()
    optimizers = [_build(entry, reference, param_ndim), _build(entry, other, param_ndim)]
    for step in range(3):
        for optimizer, params in zip(optimizers, (reference, other)):
            _set_grad(params[0], step)
            optimizer.step()
        assert other[0].stride() == strides
        torch.testing.assert_close(other[0], reference[0], rtol=0, atol=0)
        torch.testing.assert_close(other[0].grad, reference[0].grad, rtol=0, atol=0)


@pytest.mark.parametrize("bad", ["nan", "inf"])
@pytest.mark.parametrize("entry", SHIMS, ids=repr)
def test_a_non_finite_gradient_never_gives_a_finite_step(entry: ShimEntry, bad):
    params = _params(entry)
    optimizer = _build(entry, params)
    _set_grad(params[0], 0)
    params[0].grad.view(-1)[7] = float(bad)
    optimizer.step()
    assert not bool(torch.isfinite(params[0]).all()), f"{entry.name}: a {bad} gradient gave a finite step"


def _passes(optimizer) -> list[str]:
    if isinstance(optimizer, pto.GradientTransformationOptimizer):
        return ["_apply_transform_", "_apply_projection_"]
    if isinstance(optimizer, pto.ParamTransformingOptimizer):
        return ["_apply_pre_step_transform_", "_apply_post_step_transform_"]
    return []  # FrankWolfe itself is an inner optimizer: torch.optim's own step


@pytest.mark.parametrize("entry", SHIMS, ids=repr)
def test_every_transform_pass_traces_to_one_graph(entry: ShimEntry):
    params = _params(entry)
    optimizer = _build(entry, params)
    _set_grad(params[0], 0)
    if hasattr(optimizer, "_prepare_step_"):
        optimizer._prepare_step_()  # what step() does before the passes (seeds a dq stream)
    for method in _passes(optimizer):
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(getattr(optimizer, method))()
        assert not explanation.break_reasons, (method, [b.reason for b in explanation.break_reasons])
        assert explanation.graph_count <= 1  # (none for a pass with nothing to do)
