"""Settings given as tensors: one value per datum (or per element), and 0-d tensors that
change between calls of a compiled step.

What is pinned down: a tensor of budgets gives, bit for bit, what a loop over the data
with each datum's budget as a Python number gives (every op that takes one, every
dtype, both layouts of the batch); the vmap reference and ``torch.func.vmap`` agree;
``torch.compile(fullgraph=True)`` traces it without a break and compiles once while a
0-d setting changes value; the torch.optim shims take tensors in their groups; an
invalid value makes its datum NaN (values are never read on the host); a tensor of
the wrong kind or shape is an error naming the API, the argument and the shape.
"""

from __future__ import annotations

import re
import tempfile

import pytest
import torch
from torch._dynamo.testing import CompileCounter

import paramtx as ptx
import paramtx.optim as pto
from paramtx._lift.dense import vmap_reference

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
SHAPE = (4, 3, 5)  # 4 data of (3, 5) for param_ndim=-1; 12 data of (5,) for param_ndim=1


def _x(dtype: torch.dtype, seed: int = 0, shape=SHAPE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * 2).to(dtype)


def _budgets(n: int, low: float, high: float, dtype=torch.float32, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)).to(dtype)


_SAME_WIDTH_INT = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (``-0.0`` is not ``0.0``; a NaN equals a NaN of the same bits)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(_SAME_WIDTH_INT[a.dtype]), b.contiguous().view(_SAME_WIDTH_INT[b.dtype])
    )


def _transform(tx: ptx.GradientTransformation, x: torch.Tensor, params=None) -> torch.Tensor:
    return tx.update(x, tx.init(x if params is None else params), params)[0]


def _fw_point(x, direction, **kwargs):
    tx = ptx.frank_wolfe(**kwargs)
    return ptx.apply_updates(x, tx.update(direction, tx.init(x), x)[0])


# name -> (call(x, setting, param_ndim), the setting's range for random values)
OPS = {
    "project_l2_ball": (lambda x, s, nd: ptx.project_l2_ball(x, s, param_ndim=nd), (0.2, 4.0)),
    "project_l1_ball": (lambda x, s, nd: ptx.project_l1_ball(x, s, param_ndim=nd), (0.2, 4.0)),
    "project_linf_ball": (lambda x, s, nd: ptx.project_linf_ball(x, s, param_ndim=nd), (0.2, 2.0)),
    "projected_l2": (
        lambda x, s, nd: ptx.apply_updates(
            x, _transform(ptx.projected(ptx.project_l2_ball, epsilon=s, param_ndim=nd), x * 0.5, x)
        ),
        (0.2, 4.0),
    ),
    "normalize_eps": (lambda x, s, nd: _transform(ptx.normalize(2, param_ndim=nd, eps=s), x), (0.5, 20.0)),
    "top_q": (lambda x, s, nd: _transform(ptx.top_q(s, param_ndim=nd), x), (0.0, 1.0)),
    "top_q_dq": (lambda x, s, nd: _transform(ptx.top_q(s, dq=0.2, param_ndim=nd, seed=3), x), (0.0, 1.0)),
    "lmo_l1q": (lambda x, s, nd: _transform(ptx.lmo_l1q(s, param_ndim=nd), x), (0.0, 1.0)),
    "lmo_l1q_eps": (lambda x, s, nd: _transform(ptx.lmo_l1q(0.5, param_ndim=nd, eps=s), x), (1.0, 4.0)),
    "frank_wolfe_epsilon": (lambda x, s, nd: _fw_point(x, x.flip(-1), epsilon=s, param_ndim=nd), (0.2, 3.0)),
    "frank_wolfe_lr": (lambda x, s, nd: _fw_point(x, x.flip(-1), epsilon=0.7, lr=s, param_ndim=nd), (0.0, 3.0)),
    "frank_wolfe_lr_no_schedule": (
        lambda x, s, nd: _fw_point(x, x.flip(-1), epsilon=0.7, lr=s, use_default_lr_schedule=False, param_ndim=nd),
        (0.0, 1.0),
    ),
}


def _loop(call, x: torch.Tensor, budgets: torch.Tensor, param_ndim: int) -> torch.Tensor:
    """The reference: each datum alone (as a batch of one), its budget as a Python number."""
    k = x.dim() - (x.dim() + param_ndim if param_ndim < 0 else param_ndim)  # batch dims
    rows = x.reshape(-1, *x.shape[k:])
    flat = budgets.reshape(-1)
    return torch.stack([call(rows[i : i + 1], float(flat[i]), -1)[0] for i in range(rows.shape[0])]).reshape(x.shape)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", OPS)
def test_a_tensor_of_budgets_equals_a_loop_over_data_with_number_budgets(name, dtype):
    call, (low, high) = OPS[name]
    x = _x(dtype)
    for param_ndim, batch in ((-1, (4,)), (1, (4, 3))):
        budgets = _budgets(int(torch.Size(batch).numel()), low, high).reshape(batch)
        want = _loop(call, x, budgets, param_ndim)
        assert same_bits(call(x, budgets, param_ndim), want)  # (the same kernels, in the same order)
        assert same_bits(call(x, budgets.reshape(-1), param_ndim), want)  # (N,): the data in to_batch's order
        assert call(x, budgets, param_ndim).dtype == dtype


@pytest.mark.parametrize("name", OPS)
def test_budgets_broadcast_over_the_batch_and_a_0d_tensor_is_a_number(name):
    call, (low, high) = OPS[name]
    x = _x(torch.float32)
    value = _budgets(1, low, high)
    assert same_bits(call(x, value.reshape(()), -1), call(x, float(value), -1))
    per_column = _budgets(3, low, high, seed=5)  # batch (4, 3): one budget per column, broadcast over rows
    assert same_bits(call(x, per_column, 1), call(x, per_column.expand(4, 3), 1))


@pytest.mark.parametrize("budget_dtype", [torch.float16, torch.float64, torch.int64], ids=str)
def test_budgets_act_as_the_numbers_they_hold_whatever_their_dtype(budget_dtype):
    x = _x(torch.float32)
    budgets = torch.tensor([1, 2, 3, 4]).to(budget_dtype)
    for call in (ptx.project_l2_ball, ptx.project_l1_ball, ptx.project_linf_ball):
        assert same_bits(call(x, budgets), _loop(lambda r, s, nd: call(r, s, nd), x, budgets, -1))


@pytest.mark.parametrize("name", OPS)
def test_the_vmap_reference_agrees_with_the_rows_path(name):
    call, (low, high) = OPS[name]
    for dtype in (torch.float32, torch.bfloat16):
        x = _x(dtype)
        budgets = _budgets(12, low, high).reshape(4, 3)
        want = call(x, budgets, 1)
        with vmap_reference():  # (each datum's call sees a 0-d budget)
            got = call(x, budgets, 1)
        assert same_bits(got, want)  # (signed zeros included)


def test_torch_func_vmap_over_an_ensemble_with_budgets_per_member_and_datum():
    xs = _x(torch.float32, shape=(3, 4, 6))
    budgets = _budgets(12, 0.2, 3.0).reshape(3, 4)
    for project in (ptx.project_l2_ball, ptx.project_l1_ball, ptx.project_linf_ball):
        got = torch.func.vmap(project)(xs, budgets)
        want = torch.stack([project(x, b) for x, b in zip(xs, budgets)])
        assert torch.equal(got, want)
    tx = ptx.top_q(q=torch.tensor([0.5]))  # closed over: broadcast to every datum
    got = torch.func.vmap(lambda g: tx.update(g, tx.init(None))[0])(xs)
    assert torch.equal(got, torch.stack([tx.update(g, tx.init(None))[0] for g in xs]))


def test_a_per_element_box_equals_a_loop_over_elements():
    x = _x(torch.float32)
    lower = -_budgets(60, 0.0, 1.0).reshape(3, 4, 5).permute(1, 0, 2)  # broadcastable, any strides
    upper = _budgets(5, 0.0, 1.0)
    got = ptx.project_box(x, lower, upper)
    want = torch.maximum(torch.minimum(x, upper), lower)
    assert torch.equal(got, want)
    assert torch.equal(_transform(ptx.clamp(min=lower, max=upper), x), want)
    assert torch.equal(ptx.project_box(x, lower, 0.5), x.clamp(max=0.5).maximum(lower))


# ----------------------------------------------------------------------------- compile


FACTORIES = {
    "project_l2_ball": lambda x, s: ptx.project_l2_ball(x, s),
    "project_l1_ball": lambda x, s: ptx.project_l1_ball(x, s),
    "project_linf_ball": lambda x, s: ptx.project_linf_ball(x, s),
    "project_box": lambda x, s: ptx.project_box(x, -s, s),
    "projected": lambda x, s: _transform(ptx.projected(ptx.project_l2_ball, epsilon=s), x, x),
    "normalize": lambda x, s: _transform(ptx.normalize(eps=s * 10), x),
    "lmo_l2": lambda x, s: _transform(ptx.lmo_l2(eps=s * 10), x),
    "top_q": lambda x, s: _transform(ptx.top_q(s / 2), x),
    "lmo_l1q": lambda x, s: _transform(ptx.lmo_l1q(s / 2, eps=s), x),
    "clamp": lambda x, s: _transform(ptx.clamp(min=-s, max=s), x),
    "frank_wolfe": lambda x, s: _fw_point(x, x.sign(), epsilon=s, lr=s),
    "scale": lambda x, s: _transform(ptx.scale(-s), x),
    "add": lambda x, s: _transform(ptx.add(s), x),
}


def test_a_compiled_step_with_0d_settings_has_no_graph_break_and_compiles_once():
    # One step calling every factory with a 0-d setting (a hyperparameter injected as a
    # tensor), compiled with fullgraph=True (a graph break raises), called as the value
    # changes: eager's results, and one compiled frame for every value.
    torch._dynamo.reset()

    def step(x, setting):
        return {name: call(x, setting) for name, call in FACTORIES.items()}

    x = _x(torch.float32)
    counter = CompileCounter()
    compiled = torch.compile(step, backend=counter, fullgraph=True, dynamic=False)
    for value in (0.3, 0.7, 1.1):
        setting = torch.tensor(value)
        got, want = compiled(x, setting), step(x, setting)
        for name in FACTORIES:  # (rounding only: compiled norms may accumulate in float64)
            torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-6, msg=name)
    assert counter.frame_count == 1


def test_a_compiled_step_with_per_datum_budgets_has_no_graph_break():
    torch._dynamo.reset()

    def step(x, g, epsilon):
        tx = ptx.chain(ptx.top_q(epsilon / 5), ptx.projected(ptx.project_l1_ball, epsilon=epsilon))
        y = ptx.apply_updates(x, tx.update(g, tx.init(x), x)[0])
        return ptx.project_linf_ball(ptx.project_l2_ball(y, epsilon), epsilon / 2)

    x, g = _x(torch.float32), _x(torch.float32, seed=9)
    counter = CompileCounter()
    compiled = torch.compile(step, backend=counter, fullgraph=True, dynamic=False)
    for scale in (1.0, 2.0):
        budgets = _budgets(4, 0.5, 4.0) * scale
        torch.testing.assert_close(compiled(x, g, budgets), step(x, g, budgets), rtol=1e-6, atol=1e-6)
    assert counter.frame_count == 1


# ----------------------------------------------------------------------------- invalid values and shapes


@pytest.mark.parametrize(
    "name, bad",
    [
        ("project_l2_ball", (0.0, -1.0, float("nan"), float("inf"))),
        ("project_l1_ball", (0.0, -1.0, float("nan"), float("inf"))),
        ("project_linf_ball", (0.0, -1.0, float("nan"), float("inf"))),
        ("normalize_eps", (-1.0, float("nan"), float("inf"), -0.5)),
        ("top_q", (1.5, -0.1, float("nan"), float("inf"))),
        ("lmo_l1q", (1.5, -0.1, float("nan"), float("inf"))),
        ("frank_wolfe_epsilon", (0.0, -1.0, float("nan"), float("inf"))),
        ("frank_wolfe_lr", (-1.0, float("nan"), float("inf"), -0.1)),
        ("frank_wolfe_lr_no_schedule", (1.5, -0.1, float("nan"), float("inf"))),
    ],
)
def test_a_datum_whose_tensor_budget_is_invalid_comes_out_as_nans(name, bad):
    # Values of a tensor are never read on the host (no sync); an invalid one is
    # treated as NaN data are: its datum is all NaN, the others are untouched.
    call, (low, high) = OPS[name]
    x = _x(torch.float32, shape=(5, 6))
    budgets = torch.tensor([(low + high) / 2, *bad])
    out = call(x, budgets, -1)
    assert out[1:].isnan().all()
    assert same_bits(out[:1], call(x[:1], float(budgets[0]), -1))


def test_an_empty_box_given_by_tensors_makes_its_elements_nan():
    x = torch.tensor([0.5, 0.5, 0.5])
    lower, upper = torch.tensor([0.0, 1.0, float("nan")]), torch.tensor([1.0, 0.0, 1.0])
    out = ptx.project_box(x, lower, upper)
    assert out[0] == 0.5 and out[1:].isnan().all()
    assert _transform(ptx.clamp(min=lower, max=upper), x)[1:].isnan().all()


def _raises(error, *fragments):
    return pytest.raises(error, match=re.compile(".*".join(map(re.escape, fragments)), re.DOTALL))


def test_a_budget_of_the_wrong_shape_is_a_value_error_naming_api_argument_and_shapes():
    x = _x(torch.float32)
    with _raises(ValueError, "project_l2_ball:", "epsilon", "batch shape (4,)", "got a tensor of shape (3,)"):
        ptx.project_l2_ball(x, torch.ones(3))
    with _raises(ValueError, "project_l1_ball:", "epsilon", "batch shape (4, 3)", "got a tensor of shape (4,)"):
        ptx.project_l1_ball(x, torch.ones(4), param_ndim=1)
    with _raises(ValueError, "top_q:", "q", "(4,)", "got a tensor of shape (2, 2)"):
        _transform(ptx.top_q(torch.full((2, 2), 0.5)), x)
    with _raises(ValueError, "frank_wolfe:", "epsilon", "(4,)", "(5,)"):
        _fw_point(x, x, epsilon=torch.ones(5))
    with _raises(ValueError, "project_box:", "lower", "the shape (4, 3, 5)", "got a tensor of shape (2,)"):
        ptx.project_box(x, torch.zeros(2), 1.0)


def test_a_budget_tensor_of_the_wrong_kind_is_a_type_error():
    with _raises(TypeError, "project_l2_ball:", "epsilon", "torch.bool"):
        ptx.project_l2_ball(_x(torch.float32), torch.ones(4, dtype=torch.bool))
    with _raises(TypeError, "top_q:", "q", "torch.complex64"):
        ptx.top_q(torch.ones(4, dtype=torch.complex64))
    with _raises(TypeError, "project_linf_ball:", "epsilon", "[1.0]"):
        ptx.project_linf_ball(_x(torch.float32), [1.0])


# ----------------------------------------------------------------------------- the torch.optim shims


def _shim_step(make, x, grad, **settings):
    param = torch.nn.Parameter(x.clone())
    param.grad = grad.clone()
    make([param], **settings).step()
    return param.detach(), param.grad


SHIMS = {
    "L2ProjectedOptim": (lambda ps, **s: pto.L2ProjectedOptim(ps, lr=0.3, **s), "epsilon", (0.2, 3.0), 0),
    "LinfProjectedOptim": (lambda ps, **s: pto.LinfProjectedOptim(ps, lr=0.3, param_ndim=-1, **s), "epsilon", (0.2, 2.0), 0),
    "TopQGradientOptimizer": (lambda ps, **s: pto.TopQGradientOptimizer(ps, lr=0.3, **s), "q", (0.0, 1.0), 1),
    "L1qNormedGradientOptim": (lambda ps, **s: pto.L1qNormedGradientOptim(ps, lr=0.3, **s), "q", (0.0, 1.0), 1),
    "L2FrankWolfe": (lambda ps, **s: pto.L2FrankWolfe(ps, **s), "epsilon", (0.2, 3.0), 0),
    "L1qFrankWolfe": (lambda ps, **s: pto.L1qFrankWolfe(ps, q=0.4, **s), "epsilon", (0.2, 3.0), 0),
}


@pytest.mark.parametrize("name", SHIMS)
def test_a_shim_group_with_a_tensor_setting_equals_one_optimizer_per_datum(name):
    make, key, (low, high), which = SHIMS[name]
    x, grad = _x(torch.float32), _x(torch.float32, seed=4)
    budgets = _budgets(4, low, high)
    got = _shim_step(make, x, grad, **{key: budgets})[which]
    want = torch.cat([_shim_step(make, x[i : i + 1], grad[i : i + 1], **{key: float(budgets[i])})[which] for i in range(4)])
    assert same_bits(got, want)


def test_shim_groups_take_tensor_settings_per_group_and_reject_misfits_naming_the_group():
    a, b = torch.nn.Parameter(_x(torch.float32)), torch.nn.Parameter(_x(torch.float32, shape=(2, 5)))
    opt = pto.L2ProjectedOptim([a], epsilon=torch.full((4,), 0.5), lr=0.1)
    opt.add_param_group({"params": [b], "epsilon": torch.tensor([1.0, 2.0])})
    a.grad, b.grad = torch.ones_like(a), torch.ones_like(b)
    opt.step()
    assert torch.allclose(torch.linalg.vector_norm(a.detach().flatten(1), dim=1), torch.full((4,), 0.5))
    with _raises(ValueError, "L2ProjectedOptim (parameter group 2):", "epsilon", "(7,)"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(3, 2))], "epsilon": torch.ones(7)})
    assert len(opt.param_groups) == 2  # (the rejected group is not kept)
    with _raises(ValueError, "TopQGradientOptimizer (parameter group 0):", "q", "(3,)"):
        pto.TopQGradientOptimizer([torch.nn.Parameter(torch.ones(4, 2))], q=torch.ones(3), lr=0.1)


def test_a_shim_with_an_invalid_tensor_setting_writes_nans_into_that_datum_only():
    param = torch.nn.Parameter(_x(torch.float32, shape=(3, 4)))
    param.grad = torch.ones_like(param)
    pto.L2ProjectedOptim([param], epsilon=torch.tensor([1.0, -1.0, float("nan")]), lr=0.1).step()
    assert param[0].isfinite().all() and param[1:].isnan().all()


def test_clamped_shims_take_per_element_tensor_bounds():
    x, grad = _x(torch.float32), _x(torch.float32, seed=2)
    low = -_budgets(5, 0.0, 1.0)
    param = _shim_step(
        lambda ps, **s: pto.ClampedParameterOptimizer(ps, lr=0.5, param_ndim=-1, **s), x, grad, clamp_min=low, clamp_max=0.4
    )[0]
    assert torch.equal(param, (x - 0.5 * grad).clamp(max=0.4).maximum(low))


# ----------------------------------------------------------------------------- DTensor


@pytest.fixture(scope="module")
def mesh():
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if dist.is_initialized():
        pytest.skip("a process group already runs in this process")
    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=0, world_size=1)
        try:
            yield init_device_mesh("cpu", (1,))
        finally:
            dist.destroy_process_group()


def test_dtensors_take_0d_settings_and_per_datum_and_per_element_ones(mesh):
    # (one rank here; test_distributed cuts settings across two ranks, on every placement)
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    x = _x(torch.float32, shape=(4, 6))
    radii, lower = _budgets(4, 0.2, 3.0), -_budgets(24, 0.0, 1.0).reshape(4, 6)
    for dim in (0, 1):  # whole data on each rank; data split across ranks
        shards = distribute_tensor(x, mesh, [Shard(dim)])
        for project in (ptx.project_l2_ball, ptx.project_l1_ball, ptx.project_linf_ball):
            got = project(shards, torch.tensor(0.7)).full_tensor()
            torch.testing.assert_close(got, project(x, 0.7), rtol=1e-6, atol=0)  # (reductions may be reordered)
            for kwargs in ({}, {"lower": lower, "upper": lower + 1}):
                got = project(shards, radii, **kwargs)
                assert isinstance(got, DTensor) and tuple(got.placements) == (Shard(dim),)
                assert same_bits(got.full_tensor(), project(x, radii, **kwargs))
        invalid = ptx.project_l2_ball(shards, torch.tensor([1.0, -1.0, 1.0, 1.0])).full_tensor()
        assert invalid[1].isnan().all() and not invalid[[0, 2, 3]].isnan().any()
        with _raises(ValueError, "project_l2_ball:", "epsilon", "(3,)"):
            ptx.project_l2_ball(shards, torch.ones(3))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_in_place_with_tensor_settings_equals_pure_on_every_layout(layout):
    # What the shims run (the lift writing into the tensor's memory) against the pure
    # path, with per-datum settings, on layouts with and without an (N, D) view.
    from paramtx._lift import lift
    from paramtx._lift.settings import PerDatum, PerElement
    from paramtx._transforms.elementwise import CLAMP
    from paramtx._transforms.frank_wolfe import FW_STEP
    from paramtx._transforms.projections import L1_BALL, L2_BALL
    from paramtx._transforms.top_q import TOP_Q

    base = _x(torch.float32, shape=(4, 3, 2, 5))
    x = {
        "contiguous": base,
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "transposed": base.permute(3, 2, 1, 0).contiguous().permute(3, 2, 1, 0),
    }[layout]
    radii = PerDatum(_budgets(4, 0.5, 4.0), "epsilon")
    cases = [
        (L2_BALL, (), dict(epsilon=radii)),
        (L1_BALL, (), dict(epsilon=radii)),
        (TOP_Q, (), dict(keep=PerDatum(torch.tensor([0, 7, 15, 30]), "q"), bound=30)),
        (CLAMP, (), dict(low=PerElement(-_budgets(5, 0.0, 1.0), "lower"), high=radii)),
        (FW_STEP, (x.flip(0),), dict(alpha=0.5, epsilon=radii)),
    ]
    for op, others, options in cases:
        want = lift.map_data("test", op, -1, x, *others, **options)
        target = x.clone(memory_format=torch.preserve_format)
        lift.apply_("test", op, -1, target, *others, **options)
        assert target.stride() == x.stride() and same_bits(target, want), op.name


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_scale_and_add_take_tensors_as_the_numbers_they_hold(dtype):
    x = _x(dtype)
    values = _budgets(5, -2.0, 2.0, dtype=torch.float64)  # one per last-dim column
    for factory in (ptx.scale, ptx.add):
        got = _transform(factory(values), x)
        want = torch.stack([_transform(factory(float(v)), x[..., j]) for j, v in enumerate(values)], dim=-1)
        assert same_bits(got, want)
        assert same_bits(_transform(factory(values[0].reshape(())), x), _transform(factory(float(values[0])), x))


def test_injected_hyperparameters_of_these_factories_compile_once_as_they_change():
    # inject_hyperparams rebuilds each factory inside the step from 0-d tensors held in
    # the state: one compiled frame for every value, and eager's results.
    torch._dynamo.reset()
    inject = ptx.inject_hyperparams
    tx = ptx.chain(  # (the others take their settings the same way: see the 0-d test above)
        inject(ptx.lmo_l1q)(q=0.25, eps=1e-6),
        inject(ptx.frank_wolfe)(epsilon=1.5, lr=0.5),
    )
    x, g = _x(torch.float32), _x(torch.float32, seed=3)
    step = lambda g, state, x: tx.update(g, state, x)  # noqa: E731
    counter = CompileCounter()
    compiled = torch.compile(step, backend=counter, fullgraph=True, dynamic=False)
    state = eager_state = tx.init(x)
    for scale in (1.0, 0.9, 0.8):
        state = tuple(s._replace(hyperparams={k: v * scale for k, v in s.hyperparams.items()}) for s in state)
        eager_state = tuple(s._replace(hyperparams={k: v * scale for k, v in s.hyperparams.items()}) for s in eager_state)
        (got, state), (want, eager_state) = compiled(g, state, x), step(g, eager_state, x)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert counter.frame_count == 1
