"""``torch.compile`` of functional updates and of the shims' steps: one graph, no
break, the same numbers as eager.

``torch._dynamo.explain`` traces without compiling (cheap), so every chain of
the compilable families (normalize, sign, clamp, scale/add, sgd, Frank-Wolfe,
projections) is checked for graph breaks at every ``param_ndim``, and every
transform pass of the shims; inductor compiles are slow on 2 cores, so only
three chains (one per kind of state: none, momentum buffers, Frank-Wolfe step
counts) and two shims are compiled and compared with eager over several steps.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch._dynamo.utils import counters

import paramtx as ptx
from paramtx.optim import GradientTransformationOptimizer, L1qFrankWolfe, L2ProjectedOptim, TopQGradientOptimizer
from ptx_testing import randn
from transforms_registry import ENTRIES

# inductor's own imports use a deprecated torch.jit API
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

CHAINS = {
    "normalize_l2_sgd_momentum_project_l2": lambda nd: ptx.chain(
        ptx.normalize(2, param_ndim=nd),
        ptx.sgd(0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
        ptx.projected(ptx.project_l2_ball, epsilon=1.0, param_ndim=nd),
    ),
    "normalize_l1_sgd_project_l1": lambda nd: ptx.chain(
        ptx.normalize(1, param_ndim=nd), ptx.sgd(0.1), ptx.projected(ptx.project_l1_ball, epsilon=1.0, param_ndim=nd)
    ),
    "normalize_linf_nesterov_project_linf_box": lambda nd: ptx.chain(
        ptx.normalize(math.inf, param_ndim=nd),
        ptx.sgd(0.1, momentum=0.5, nesterov=True),
        ptx.projected(ptx.project_linf_ball, epsilon=0.5),
        ptx.projected(ptx.project_box, lower=-0.4, upper=0.3),
    ),
    "sign_scale_add_clamp": lambda nd: ptx.chain(ptx.sign(), ptx.scale(-0.1), ptx.add(0.01), ptx.clamp(-0.05, 0.05)),
    "frank_wolfe_l1": lambda nd: ptx.chain(ptx.lmo_l1(param_ndim=nd), ptx.frank_wolfe(1.0)),
    "frank_wolfe_l1q": lambda nd: ptx.chain(ptx.lmo_l1q(0.5, param_ndim=nd), ptx.frank_wolfe(1.0)),
    "frank_wolfe_l2": lambda nd: ptx.chain(ptx.lmo_l2(param_ndim=nd), ptx.frank_wolfe(1.0)),
    "frank_wolfe_linf_fixed_lr": lambda nd: ptx.chain(
        ptx.lmo_linf(), ptx.frank_wolfe(1.0, lr=0.3, use_default_lr_schedule=False)
    ),
    "top_q_sgd": lambda nd: ptx.chain(ptx.top_q(0.7, param_ndim=nd), ptx.sgd(0.1)),
    "top_q_dq_adam": lambda nd: ptx.chain(ptx.top_q(0.7, dq=0.2, param_ndim=nd, seed=3), ptx.adam(0.1)),
    "frank_wolfe_l1q_dq": lambda nd: ptx.chain(ptx.lmo_l1q(0.5, dq=0.3, param_ndim=nd), ptx.frank_wolfe(1.0)),
}


def tree(seed: int, scale: float = 1.0) -> dict:
    """A model-like tree: conv and linear weights, a bias, a scalar and a ``None``."""
    return {
        "conv": randn((4, 3, 3, 3), seed=seed, scale=scale),
        "linear": randn((5, 6), seed=seed + 1, scale=scale),
        "bias": randn((5,), seed=seed + 2, scale=scale),
        "scalar": randn((), seed=seed + 3, scale=scale),
        "frozen": None,
    }


def params_tree() -> dict:
    params = tree(100, scale=0.3)
    params.pop("scalar")  # param_ndim=1 does not fit a 0-d tensor
    return params


def grads_tree(step: int) -> dict:
    grads = tree(step)
    grads.pop("scalar")
    return grads


@pytest.mark.parametrize("param_ndim", [None, -1, 1])
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_functional_update_traces_to_one_graph_without_breaks(name, param_ndim):
    tx = CHAINS[name](param_ndim)
    params = params_tree()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(tx.update)(grads_tree(0), tx.init(params), params)
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]
    assert explanation.graph_count == 1


def test_scalar_params_trace_without_breaks():
    tx = CHAINS["normalize_l2_sgd_momentum_project_l2"](-1)
    params, grads = tree(100), tree(0)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(tx.update)(grads, tx.init(params), params)
    assert explanation.graph_break_count == 0


def test_dtensor_check_does_not_break_the_graph():
    import torch.distributed.tensor  # noqa: F401  (map_data now checks every leaf against DTensor)

    tx = CHAINS["normalize_l2_sgd_momentum_project_l2"](-1)
    params = params_tree()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(tx.update)(grads_tree(0), tx.init(params), params)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


@pytest.mark.parametrize(
    "name", ["normalize_l2_sgd_momentum_project_l2", "frank_wolfe_l1", "sign_scale_add_clamp", "top_q_dq_adam"]
)
def test_compiled_update_equals_eager_over_steps_without_recompiling(name):
    tx = CHAINS[name](-1)
    torch._dynamo.reset()
    counters.clear()
    compiled_update = torch.compile(tx.update)
    params_eager = params_compiled = params_tree()
    state_eager = state_compiled = tx.init(params_eager)
    for step in range(3):
        grads = grads_tree(step)
        updates, state_eager = tx.update(grads, state_eager, params_eager)
        params_eager = ptx.apply_updates(params_eager, updates)
        updates, state_compiled = compiled_update(grads, state_compiled, params_compiled)
        params_compiled = ptx.apply_updates(params_compiled, updates)
        for key, want in params_eager.items():
            got = params_compiled[key]
            if want is None:
                assert got is None
            else:
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=f"{name}, step {step}, {key}")
    # The state's structure and tensors' metadata stay put: the first graph serves every step.
    assert counters["stats"]["unique_graphs"] <= 1  # (none for a transform with nothing to compute)
    torch.testing.assert_close(state_compiled, state_eager, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- the shims' compiled step

SHIMS = {
    "L2ProjectedOptim": lambda ps, **kw: L2ProjectedOptim(ps, epsilon=0.5, lr=0.3, momentum=0.5, **kw),
    "TopQGradientOptimizer": lambda ps, **kw: TopQGradientOptimizer(ps, q=0.6, lr=0.3, **kw),
    "TopQGradientOptimizer (dq>0)": lambda ps, **kw: TopQGradientOptimizer(
        ps, q=0.6, dq=0.3, lr=0.3, generator=torch.Generator().manual_seed(0), **kw
    ),
    "L1qFrankWolfe": lambda ps, **kw: L1qFrankWolfe(ps, q=0.6, epsilon=0.5, **kw),
    "GradientTransformationOptimizer": lambda ps, **kw: GradientTransformationOptimizer(
        ps, CHAINS["normalize_l2_sgd_momentum_project_l2"](-1), **kw
    ),
}


def shim_params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(t) for t in params_tree().values() if t is not None]


def set_grads(params: list[torch.nn.Parameter], step: int) -> None:
    for param, grad in zip(params, (g for g in grads_tree(step).values() if g is not None)):
        param.grad = grad.clone()


@pytest.mark.parametrize("name", sorted(SHIMS))
def test_shim_transform_passes_trace_to_one_graph_each(name):
    optimizer = SHIMS[name](shim_params())
    set_grads(optimizer.param_groups[0]["params"], 0)
    if hasattr(optimizer, "_prepare_step_"):
        optimizer._prepare_step_()  # what step() does first: seeds a dq stream
    passes = (
        ["_apply_transform_", "_apply_projection_"]
        if name == "GradientTransformationOptimizer"
        else ["_apply_pre_step_transform_", "_apply_post_step_transform_"]
    )
    for method in passes:
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(getattr(optimizer, method))()
        # (no graph at all for a pass with nothing to do, e.g. no projection)
        assert explanation.graph_count <= 1, (method, [b.reason for b in explanation.break_reasons])


def test_shims_compile_only_when_asked():
    optimizer = SHIMS["L2ProjectedOptim"](shim_params())
    assert optimizer._apply_pre_step_transform_.__func__ is type(optimizer)._apply_pre_step_transform_
    with pytest.raises(TypeError, match="compile must be a bool"):
        SHIMS["L2ProjectedOptim"](shim_params(), compile="yes")


@pytest.mark.parametrize("name", ["L2ProjectedOptim", "L1qFrankWolfe", "TopQGradientOptimizer (dq>0)"])
def test_shim_compiled_step_equals_eager(name):
    torch._dynamo.reset()
    eager_params, compiled_params = shim_params(), shim_params()
    eager, compiled = SHIMS[name](eager_params), SHIMS[name](compiled_params, compile=True)
    for step in range(3):
        for optimizer, params in ((eager, eager_params), (compiled, compiled_params)):
            set_grads(params, step)
            optimizer.step()
        for got, want in zip(compiled_params, eager_params):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=f"{name}, step {step}")
            torch.testing.assert_close(got.grad, want.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("entry", ENTRIES, ids=repr)
def test_a_compiled_step_compiles_once_over_ten_steps(entry):
    # Step counts and random streams live in the state as tensors, so the graph's
    # guards hold step after step: one compilation serves every step. (Dynamo decides
    # recompiles whatever the backend; "eager" spares inductor's code generation.)
    tx = entry.build(-1)
    params = params_tree()
    state = tx.init(params)
    torch._dynamo.reset()
    counters.clear()
    step = torch.compile(tx.update, backend="eager", fullgraph=True)
    for k in range(10):
        updates, state = step(grads_tree(k), state, params)
        params = ptx.apply_updates(params, updates)
    assert counters["stats"]["unique_graphs"] <= 1  # (none for a transform with nothing to compute)
