"""One battery for every transform of the registry (``transforms_registry.py``).

Each entry is checked for: dtype kept, a state whose structure is stable across
steps, empty trees and zero-size leaves, ``None`` leaves passing through, every
tree kind, every ``param_ndim`` (row-batched path == vmap reference == a Python
loop over the data), ``torch.func.vmap`` over an ensemble dim == a loop over the
members, purity (inputs never written to), and ``torch.func.grad`` through it.
"""

from __future__ import annotations

import inspect

import optree
import pytest
import torch

import paramtx as ptx
from paramtx._lift.dense import vmap_reference
from paramtx._lift.param_ndim import batch_shape
from ptx_testing import (
    PARAM_NDIM_SHAPES,
    TREE_KINDS,
    assert_trees_equal,
    assert_untouched,
    fitting_param_ndims,
    leaves,
    make_tree,
    randn,
    run_steps,
    snapshot,
    structure,
)
from transforms_registry import ENTRIES, Entry

PER_DATUM = [entry for entry in ENTRIES if entry.per_datum]
STEPS = 3


def _grads(kind: str, dtype: torch.dtype, count: int = STEPS, seed: int = 1) -> list:
    return [make_tree(kind, dtype, seed=seed + step) for step in range(count)]


def _params(kind: str, dtype: torch.dtype) -> object:
    # Small parameters, so that the projections bind on some data and not on others.
    return make_tree(kind, dtype, seed=50, scale=0.3)


def _public_functions(returning: str) -> set[str]:
    """Public functions of paramtx annotated to return ``returning``."""
    names = set()
    for name in ptx.__all__:
        obj = getattr(ptx, name)
        if inspect.isfunction(obj):
            annotation = inspect.signature(obj).return_annotation
            if annotation == returning or getattr(annotation, "__name__", None) == returning:
                names.add(name)
    return names


def test_registry_covers_every_public_transform_and_projection():
    covered = set().union(*(entry.factories for entry in ENTRIES))
    transforms = _public_functions("GradientTransformation")
    projections = _public_functions("Params") - {"apply_updates"}
    # the detection itself works
    assert {"chain", "scale", "top_q", "sgd", "frank_wolfe", "projected"} <= transforms
    assert projections == {
        "project_l2_ball", "project_l1_ball", "project_linf_ball", "project_box", "project_simplex", "project_lp_ball"
    }
    assert (transforms | projections) - covered == set(), "public transforms missing from the registry"
    assert covered - (transforms | projections) == set(), "registry names that are not public transforms"


# ----------------------------------------------------------------------------- dtype, state


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("entry", ENTRIES, ids=repr)
def test_update_keeps_every_leaf_dtype(entry: Entry, dtype: torch.dtype):
    # bfloat16 as well as float32/float64: it catches a float64 scalar
    # (e.g. a bias correction) promoting a low-precision leaf.
    params = _params("dict", dtype)
    outputs, state, new_params = run_steps(entry.build(-1), _grads("dict", dtype), params)
    for updates in outputs:
        for name, update in updates.items():
            assert update.dtype == dtype, (name, update.dtype)
            assert update.shape == params[name].shape
    for name, param in new_params.items():
        assert param.dtype == dtype
    hyperparams = {id(leaf) for leaf in _injected_hyperparams(state)}
    for leaf in leaves(state):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point() and id(leaf) not in hyperparams:
            assert leaf.dtype == dtype, leaf.dtype


def _injected_hyperparams(state) -> list:
    """The hyperparameter tensors of every ``InjectHyperparamsState`` in ``state``: they are
    float32 at least whatever the params (an eps of 1e-8 is 0 in float16)."""
    found = optree.tree_leaves(state, is_leaf=lambda x: isinstance(x, ptx.InjectHyperparamsState), none_is_leaf=True)
    return [leaf for s in found if isinstance(s, ptx.InjectHyperparamsState) for leaf in leaves(s.hyperparams)]


@pytest.mark.parametrize("kind", TREE_KINDS)
@pytest.mark.parametrize("entry", ENTRIES, ids=repr)
def test_state_structure_is_stable_across_steps(entry: Entry, kind: str):
    tx = entry.build(-1)
    params = _params(kind, torch.float32)
    state = tx.init(params)
    spec = structure(state)
    layout = [(type(x), getattr(x, "shape", None), getattr(x, "dtype", None)) for x in leaves(state)]
    for grads in _grads(kind, torch.float32):
        updates, state = tx.update(grads, state, params)
        params = ptx.apply_updates(params, updates)
        assert structure(state) == spec
        assert [(type(x), getattr(x, "shape", None), getattr(x, "dtype", None)) for x in leaves(state)] == layout


# ----------------------------------------------------------------------------- trees


@pytest.mark.parametrize("empty", [{}, [], ()], ids=["dict", "list", "tuple"])
@pytest.mark.parametrize("entry", ENTRIES, ids=repr)
def test_update_works_on_empty_trees(entry: Entry, empty):
    tx = entry.build(-1)
    state = tx.init(empty)
    for _ in range(2):
        updates, new_state = tx.update(empty, state, empty)
        assert updates == empty and type(updates) is type(empty)
        assert structure(new_state) == structure(state)
        state = new_state


@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0), (2, 0, 3)], ids=str)
@pytest.mark.parametrize("entry", ENTRIES, ids=repr)
def test_update_works_on_zero_size_leaves(entry: Entry, shape):
    params = {"e": torch.zeros(shape), "x": randn((2, 3), seed=3)}
    grads = [{"e": torch.zeros(shape), "x": randn((2, 3), seed=4 + step)} for step in range(2)]
    outputs, _, new_params = run_steps(entry.build(-1), grads, params)
    assert outputs[-1]["e"].shape == shape
    assert new_params["e"].shape == shape
    if not entry.leafwise:
        return  # with dq > 0 the empty leaf takes a draw of q, which shifts its neighbour's
    # the empty leaf does not disturb its neighbour
    alone, _, _ = run_steps(entry.build(-1), [{"x": g["x"]} for g in grads], {"x": params["x"]})
    assert_trees_equal([out["x"] for out in outputs], [out["x"] for out in alone])


@pytest.mark.parametrize("entry", ENTRIES, ids=repr)
def test_none_update_leaves_pass_through(entry: Entry):
    params = {"a": randn((3, 2), seed=1), "b": randn((4,), seed=2), "c": [randn((2, 2), seed=3), None]}
    grads = [
        {"a": randn((3, 2), seed=10 + s), "b": None, "c": [randn((2, 2), seed=20 + s), None]} for s in range(STEPS)
    ]
    outputs, state, new_params = run_steps(entry.build(-1), grads, params)
    for updates in outputs:
        assert updates["b"] is None and updates["c"][1] is None
    assert new_params["b"] is params["b"]  # untouched parameter: the very same tensor
    assert new_params["c"][1] is None
    # The other leaves get what they get without the None leaves (the dq draws
    # are indexed by the leaves that have an update, so this holds for them too).
    present_params = {"a": params["a"], "c": [params["c"][0]]}
    present_grads = [{"a": g["a"], "c": [g["c"][0]]} for g in grads]
    alone, _, _ = run_steps(entry.build(-1), present_grads, present_params)
    for updates, expected in zip(outputs, alone):
        assert_trees_equal({"a": updates["a"], "c": [updates["c"][0]]}, expected)


@pytest.mark.parametrize("kind", TREE_KINDS)
@pytest.mark.parametrize("entry", ENTRIES, ids=repr)
def test_update_works_on_every_tree_kind(entry: Entry, kind: str):
    params = _params(kind, torch.float64)
    grads = _grads(kind, torch.float64)
    outputs, state, new_params = run_steps(entry.build(-1), grads, params)
    for updates in outputs:
        assert structure(updates) == structure(params)
    assert structure(new_params) == structure(params)
    if not entry.leafwise:
        return  # with dq > 0, a leaf's draw of q depends on its position in the tree
    # leaf by leaf, the tree result is the result of that leaf alone
    param_leaves, spec = optree.tree_flatten(params)
    for index, param in enumerate(param_leaves):
        alone, _, _ = run_steps(entry.build(-1), [leaves(g)[index] for g in grads], param)
        for step, updates in enumerate(outputs):
            assert_trees_equal(leaves(updates)[index], alone[step])


# ----------------------------------------------------------------------------- param_ndim


def _loop_over_data(entry: Entry, grads: list, params: torch.Tensor, param_ndim) -> list:
    """The reference: the transform with ``param_ndim=None`` run on each datum alone."""
    shape = params.shape
    view = batch_shape("test", shape, param_ndim)
    p_data = params.reshape(view)
    g_data = [g.reshape(view) for g in grads]
    per_datum = [
        run_steps(entry.build(None), [g[i] for g in g_data], p_data[i])[0] for i in range(view[0])
    ]
    return [torch.stack([steps[k] for steps in per_datum]).reshape(shape) for k in range(len(grads))]


def _param_ndim_cases():
    for entry in PER_DATUM:
        for shape in PARAM_NDIM_SHAPES:
            for param_ndim in fitting_param_ndims(len(shape)):
                yield pytest.param(entry, shape, param_ndim, id=f"{entry.name}-{shape}-{param_ndim}")


@pytest.mark.parametrize("entry, shape, param_ndim", list(_param_ndim_cases()))
def test_rows_path_equals_vmap_path_equals_loop_over_data(entry: Entry, shape, param_ndim):
    grads = [randn(shape, torch.float64, seed=100 + step) for step in range(2)]
    params = randn(shape, torch.float64, seed=99, scale=0.3)
    rows, _, _ = run_steps(entry.build(param_ndim), grads, params)
    with vmap_reference():
        vmapped, _, _ = run_steps(entry.build(param_ndim), grads, params)
    loop = _loop_over_data(entry, grads, params, param_ndim)
    # Both lifts run the same kernels on the same rows, and a row reduction does not
    # depend on the other rows: all three are bit-for-bit equal.
    assert_trees_equal(vmapped, rows)
    assert_trees_equal(loop, rows)


# (a transform whose leaf's result depends on other leaves is not element-wise)
@pytest.mark.parametrize("entry", [e for e in ENTRIES if not e.per_datum and e.leafwise], ids=repr)
def test_element_wise_transforms_ignore_the_datum_split(entry: Entry):
    # An element-wise map is per datum for every datum split: the loop over
    # single elements (param_ndim=0) gives the whole-tensor result.
    shape = (3, 5, 2)
    grads = [randn(shape, torch.float64, seed=7 + step) for step in range(2)]
    params = randn(shape, torch.float64, seed=3, scale=0.3)
    whole, _, _ = run_steps(entry.build(None), grads, params)
    assert_trees_equal(_loop_over_data(entry, grads, params, 0), whole)


# ----------------------------------------------------------------------------- torch.func.vmap


def _stack(trees: list) -> object:
    return optree.tree_map(lambda *xs: torch.stack(xs), *trees)


@pytest.mark.parametrize("entry", ENTRIES, ids=repr)
def test_func_vmap_of_init_and_update_over_an_ensemble_equals_a_loop_over_members(entry: Entry):
    # States hold tensors only, so vmap takes init and update with its default in_dims.
    members = 4
    params = [make_tree("dict", torch.float64, seed=60 + m, scale=0.3) for m in range(members)]
    grads = [_grads("dict", torch.float64, count=2, seed=70 + 10 * m) for m in range(members)]
    tx = entry.build(-1)
    expected = [run_steps(tx, grads[m], params[m]) for m in range(members)]

    stacked_params = _stack(params)
    state = torch.func.vmap(tx.init)(stacked_params)
    assert structure(state) == structure(tx.init(params[0]))
    step = torch.func.vmap(tx.update)
    for k in range(2):
        updates, state = step(_stack([g[k] for g in grads]), state, stacked_params)
        stacked_params = ptx.apply_updates(stacked_params, updates)
        if k == 0:
            first = updates
    for m in range(members):
        member = optree.tree_map(lambda x: x[m], stacked_params)
        # the same kernels over a batch dim: bit-for-bit equal
        assert_trees_equal(member, expected[m][2])
        assert_trees_equal(optree.tree_map(lambda x: x[m], first), expected[m][0][0])
        assert_trees_equal(optree.tree_map(lambda x: x[m], state), expected[m][1])


# ----------------------------------------------------------------------------- purity


@pytest.mark.parametrize("entry", ENTRIES, ids=repr)
def test_update_never_mutates_its_inputs(entry: Entry, lifting):
    tx = entry.build(-1)
    params = _params("nested", torch.float32)
    state = tx.init(params)
    for grads in _grads("nested", torch.float32):
        before = snapshot(grads, state, params)
        updates, new_state = tx.update(grads, state, params)
        assert_untouched(before)
        new_params = ptx.apply_updates(params, updates)
        assert_untouched(before)  # apply_updates is pure too
        state, params = new_state, new_params


# ----------------------------------------------------------------------------- torch.func.grad


def _weighted_sum(entry: Entry, state, params, weights):
    tx = entry.build(-1)

    def objective(grads):
        updates, _ = tx.update(grads, state, params)
        return sum((w * u).sum() for w, u in zip(leaves(weights), leaves(updates)))

    return objective


@pytest.mark.parametrize("entry", ENTRIES, ids=repr)
def test_func_grad_through_update_exists_and_matches_autograd(entry: Entry, lifting):
    dtype = torch.float64
    tx = entry.build(-1)
    params = _params("dict", dtype)
    first, *rest = _grads("dict", dtype)
    # one step first, so momentum buffers, moments and step counts are not trivial
    _, state = tx.update(first, tx.init(params), params)
    grads = rest[0]
    weights = make_tree("dict", dtype, seed=77)
    objective = _weighted_sum(entry, state, params, weights)

    functional = torch.func.grad(objective)(grads)
    inputs = optree.tree_map(lambda g: g.detach().clone().requires_grad_(True), grads)
    reference = torch.autograd.grad(objective(inputs), leaves(inputs), allow_unused=True)
    assert structure(functional) == structure(grads)
    for g_func, g_ref, x in zip(leaves(functional), reference, leaves(inputs)):
        assert g_func.shape == x.shape
        assert torch.isfinite(g_func).all()
        if g_ref is None:  # the output does not depend on this input at all
            g_ref = torch.zeros_like(x)
        torch.testing.assert_close(g_func, g_ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("entry", ENTRIES, ids=repr)
def test_autograd_gradient_of_update_matches_finite_differences(entry: Entry):
    # Together with the test above, this pins torch.func.grad to the true
    # derivative. Random inputs sit away from the kinks (ties, clamp bounds,
    # the ball's boundary) by far more than gradcheck's step of 1e-6.
    dtype = torch.float64
    tx = entry.build(-1)
    params = _params("dict", dtype)
    first, second, _ = _grads("dict", dtype)
    _, state = tx.update(first, tx.init(params), params)
    names = sorted(second)

    def fn(*xs):
        updates, _ = tx.update(dict(zip(names, xs)), state, params)
        return tuple(updates[name] for name in names)

    inputs = tuple(second[name].detach().clone().requires_grad_(True) for name in names)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
