"""``masked`` and ``multi_transform``: each transform on its own leaves, the others untouched,
with no state for them; under vmap over an ensemble, compiled without a break, checkpointed.

(The shared battery, ``test_battery.py``, also drives both through every tree kind,
dtype, ``None`` leaves, purity and ``torch.func.grad``: see ``transforms_registry.py``.)
"""

from __future__ import annotations

import io

import optree
import pytest
import torch

import paramtx as ptx
from ptx_testing import assert_trees_equal, randn, run_steps

STEPS = 3


def model_params(seed: int = 0, dtype=torch.float32) -> dict:
    return {
        "embedding": randn((6, 4), dtype, seed=seed),
        "layer": {"weight": randn((3, 4), dtype, seed=seed + 1), "bias": randn((3,), dtype, seed=seed + 2)},
        "head": {"weight": randn((2, 3), dtype, seed=seed + 3), "bias": randn((2,), dtype, seed=seed + 4)},
    }


def model_grads(step: int, dtype=torch.float32) -> dict:
    return model_params(seed=100 + 10 * step, dtype=dtype)


def is_weight(params) -> dict:
    # (by keys: torch 2.13's compiler does not trace optree.tree_map_with_path over graph inputs)
    return {name: {k: k == "weight" for k in node} if isinstance(node, dict) else False for name, node in params.items()}


def sub(tree: dict, paths: list[tuple[str, ...]]) -> dict:
    """The leaves at ``paths``, as a flat dict keyed by path."""
    out = {}
    for path in paths:
        node = tree
        for key in path:
            node = node[key]
        out[path] = node
    return out


WEIGHTS = [("layer", "weight"), ("head", "weight")]
OTHERS = [("embedding",), ("layer", "bias"), ("head", "bias")]


# ----------------------------------------------------------------------------- masked


@pytest.mark.parametrize(
    "mask",
    [
        is_weight,
        {"embedding": False, "layer": {"weight": True, "bias": False}, "head": {"weight": True, "bias": False}},
    ],
    ids=["function", "pytree"],
)
def test_masked_applies_inner_to_the_selected_leaves_and_passes_the_others_through(mask):
    inner = ptx.chain(ptx.clip_by_global_norm(1.0), ptx.adam(0.1))
    params = model_params()
    grads = [model_grads(k) for k in range(STEPS)]
    outputs, state, _ = run_steps(ptx.masked(inner, mask), grads, params)
    # the selected leaves: inner run on them alone (clip's norm over them only)
    alone, _, _ = run_steps(inner, [sub(g, WEIGHTS) for g in grads], sub(params, WEIGHTS))
    for updates, grad, want in zip(outputs, grads, alone):
        assert_trees_equal(sub(updates, WEIGHTS), want)
        for path in OTHERS:  # the very same tensors: passed through
            assert sub(updates, [path])[path] is sub(grad, [path])[path]
    # no state for the leaves masked out
    for path in OTHERS:
        assert isinstance(sub(state.inner_state[1].mu, [path])[path], ptx.MaskedNode)


def test_a_prefix_mask_covers_each_subtree_whole():
    params, grads = model_params(), [model_grads(k) for k in range(STEPS)]
    prefix = ptx.masked(ptx.sgd(0.1, momentum=0.9), {"embedding": False, "layer": True, "head": False})
    full = ptx.masked(
        ptx.sgd(0.1, momentum=0.9),
        {"embedding": False, "layer": {"weight": True, "bias": True}, "head": {"weight": False, "bias": False}},
    )
    assert_trees_equal(run_steps(prefix, grads, params), run_steps(full, grads, params))


def test_masked_with_everything_masked_out_is_the_identity():
    params, grads = model_params(), [model_grads(k) for k in range(STEPS)]
    tx = ptx.masked(ptx.adam(0.1), lambda p: optree.tree_map(lambda _: False, p))
    outputs, state, _ = run_steps(tx, grads, params)
    for updates, g in zip(outputs, grads):
        assert all(u is x for u, x in zip(optree.tree_leaves(updates), optree.tree_leaves(g)))
    assert optree.tree_leaves(state) == []  # no state at all (nor a step count: no leaf was stepped)


def test_a_function_mask_reads_the_updates_when_update_gets_no_params():
    tx = ptx.masked(ptx.scale(-1.0), lambda tree: optree.tree_map(lambda x: x.ndim > 1, tree))
    grads = model_grads(0)
    updates, _ = tx.update(grads, tx.init(model_params()))
    torch.testing.assert_close(updates["layer"]["weight"], -grads["layer"]["weight"])
    assert updates["layer"]["bias"] is grads["layer"]["bias"]


def test_none_updates_pass_through_masked():
    params = {"a": torch.ones(2), "b": torch.ones(2)}
    tx = ptx.masked(ptx.sgd(1.0, momentum=0.5), {"a": True, "b": True})
    updates, _ = tx.update({"a": torch.ones(2), "b": None}, tx.init(params), params)
    assert updates["b"] is None
    torch.testing.assert_close(updates["a"], -torch.ones(2))


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: ptx.masked(ptx.sgd(0.1), {"layer": 1}), TypeError, "masked: mask must be a pytree of bools or a function of the params, got 1 at leaf layer"),
        (lambda: ptx.masked(lambda u: u, {"w": True}), TypeError, "masked: inner must be a GradientTransformation, got"),
    ],
)
def test_bad_masks_are_named_in_the_error(build, error, message):
    with pytest.raises(error, match="^" + message):
        build()


def test_a_mask_of_another_structure_is_a_value_error():
    tx = ptx.masked(ptx.sgd(0.1), {"layer": True, "nothing": False})
    with pytest.raises(ValueError, match="^masked: mask must have the structure of the params"):
        tx.init(model_params())
    tx = ptx.masked(ptx.sgd(0.1), lambda p: {"w": "yes"})
    with pytest.raises(TypeError, match="^masked: mask must hold bools, got 'yes'"):
        tx.init({"w": torch.ones(1)})
    with pytest.raises(ValueError, match="^masked: state must be the MaskedState"):
        ptx.masked(ptx.sgd(0.1), {"w": True}).update({"w": torch.ones(1)}, ptx.EmptyState())


# ----------------------------------------------------------------------------- multi_transform


def group_of(params) -> dict:
    """Weights per row, biases whole, the embedding frozen: param groups, functionally."""
    return {
        "embedding": "frozen",
        "layer": {"weight": "rows", "bias": "whole"},
        "head": {"weight": "rows", "bias": "whole"},
    }


TRANSFORMS = {
    "rows": ptx.chain(ptx.normalize(2, param_ndim=1), ptx.sgd(0.1, momentum=0.9)),
    "whole": ptx.adam(0.05),
    "frozen": ptx.scale(0.0),
}


@pytest.mark.parametrize("labels", [group_of, group_of(None)], ids=["function", "pytree"])
def test_multi_transform_gives_each_label_its_transform_on_its_leaves_alone(labels):
    params = model_params()
    grads = [model_grads(k) for k in range(STEPS)]
    outputs, state, _ = run_steps(ptx.multi_transform(TRANSFORMS, labels), grads, params)
    groups = {"rows": WEIGHTS, "whole": [("layer", "bias"), ("head", "bias")], "frozen": [("embedding",)]}
    for label, paths in groups.items():
        alone, alone_state, _ = run_steps(TRANSFORMS[label], [sub(g, paths) for g in grads], sub(params, paths))
        for updates, want in zip(outputs, alone):
            assert_trees_equal(sub(updates, paths), want)
    assert set(state.inner_states) == {"rows", "whole", "frozen"}
    assert int(state.inner_states["whole"].count["layer"]["bias"]) == STEPS
    assert isinstance(state.inner_states["whole"].count["layer"]["weight"], ptx.MaskedNode)


def test_a_label_without_a_transform_is_a_value_error():
    with pytest.raises(ValueError, match=r"^multi_transform: param_labels has 'c' at leaf b, which is not a label of transforms \(labels: \['a'\]\)"):
        ptx.multi_transform({"a": ptx.sgd(0.1)}, {"w": "a", "b": "c"})  # (a pytree of labels: checked when built)
    tx = ptx.multi_transform({"a": ptx.sgd(0.1)}, lambda p: {"w": "a", "b": "c"})
    with pytest.raises(ValueError, match=r"^multi_transform: param_labels has 'c' at leaf b"):
        tx.init({"w": torch.ones(1), "b": torch.ones(1)})
    with pytest.raises(TypeError, match="^multi_transform: transforms must be a non-empty mapping"):
        ptx.multi_transform({}, {"w": "a"})
    with pytest.raises(TypeError, match=r"^multi_transform: transforms\['a'\] must be a GradientTransformation"):
        ptx.multi_transform({"a": 0.1}, {"w": "a"})
    with pytest.raises(ValueError, match="^multi_transform: state must be the MultiTransformState"):
        ptx.multi_transform({"a": ptx.sgd(0.1)}, "a").update({"w": torch.ones(1)}, ptx.EmptyState())


# ----------------------------------------------------------------------------- ensembles, compile, checkpoints


COMPOSED = {
    "masked_adamw": lambda: ptx.masked(ptx.adamw(0.05, weight_decay=0.1), is_weight),
    "multi_transform": lambda: ptx.multi_transform(TRANSFORMS, group_of),
    "masked_scheduled": lambda: ptx.masked(ptx.sgd(ptx.cosine_decay_schedule(0.1, 10), momentum=0.9), is_weight),
}
# (lighter inner transforms for the traces: tracing a scale-safe norm takes seconds on 2 cores,
# and what is checked is the composition's own tree handling)
TRACED = {
    "masked": lambda: ptx.masked(ptx.sgd(ptx.cosine_decay_schedule(0.1, 10), momentum=0.9), is_weight),
    "multi_transform": lambda: ptx.multi_transform(
        {"rows": ptx.sgd(0.1, momentum=0.9), "whole": ptx.sgd(0.05), "frozen": ptx.scale(0.0)}, group_of
    ),
}


@pytest.mark.parametrize("name", sorted(COMPOSED))
def test_vmap_over_an_ensemble_equals_a_loop_over_its_members(name):
    members = 3
    tx = COMPOSED[name]()
    params = [model_params(seed=7 * m) for m in range(members)]
    grads = [[model_grads(10 * k + m) for m in range(members)] for k in range(STEPS)]
    stacked = optree.tree_map(lambda *xs: torch.stack(xs), *params)
    state = torch.func.vmap(tx.init)(stacked)
    for k in range(STEPS):
        updates, state = torch.func.vmap(tx.update)(optree.tree_map(lambda *xs: torch.stack(xs), *grads[k]), state, stacked)
        stacked = ptx.apply_updates(stacked, updates)
    for m in range(members):
        _, _, alone = run_steps(tx, [grads[k][m] for k in range(STEPS)], params[m])
        # the same kernels over a batch dim (a scale-safe norm may take another, exact, path)
        torch.testing.assert_close(optree.tree_map(lambda x: x[m], stacked), alone, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(TRACED))
def test_the_update_traces_to_one_graph_without_breaks(name):
    # (nested dicts, a subtree wholly masked out: what the compiler's pytree support finds hardest)
    tx = TRACED[name]()
    params = model_params()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(tx.update)(model_grads(0), tx.init(params), params)
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]
    assert explanation.graph_count == 1


@pytest.mark.parametrize("name", sorted(COMPOSED))
def test_state_round_trips_through_torch_save_and_load(name):
    tx = COMPOSED[name]()
    params = model_params()
    _, state, params = run_steps(tx, [model_grads(k) for k in range(2)], params)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = torch.load(buffer)  # weights_only by default: the state types are allowlisted
    assert_trees_equal(restored, state)
    grads = model_grads(5)
    assert_trees_equal(tx.update(grads, restored, params), tx.update(grads, state, params))
