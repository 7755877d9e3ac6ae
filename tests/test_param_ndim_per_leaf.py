"""``param_ndim`` given per leaf: a pytree of ints and ``None``s (the params' structure, or a
prefix of it) or a callable of the leaf's path and shape, in every factory that takes one.

What is pinned down: each leaf gets what the same factory with that leaf's int gives;
a prefix covers the leaves below it; a callable is asked with each leaf's path and
shape; misfits are errors naming the leaf's path; a compiled step traces it.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch._dynamo.testing import CompileCounter

import paramtx as ptx


def _tree(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "encoder": {"weight": torch.randn(4, 6, generator=generator), "bias": torch.randn(6, generator=generator)},
        "decoder": {"weight": torch.randn(3, 2, 5, generator=generator), "bias": None},
    }


PER_LEAF = {"encoder": {"weight": -1, "bias": None}, "decoder": {"weight": 1, "bias": 0}}
PREFIX = {"encoder": None, "decoder": -2}  # covers every leaf below each key


def by_rule(path, shape):
    return -1 if len(shape) > 1 else None  # weights per row, biases whole


def _transform(tx, updates, params=None):
    return tx.update(updates, tx.init(params if params is not None else updates), params)[0]


def _fw(param_ndim):
    return lambda u, p: _transform(ptx.frank_wolfe(epsilon=torch.tensor([1.0]), param_ndim=param_ndim), u, p)


# name -> call(updates, params, param_ndim)
CALLS = {
    "normalize": lambda u, p, nd: _transform(ptx.normalize(1, param_ndim=nd), u),
    "lmo_l2": lambda u, p, nd: _transform(ptx.lmo_l2(param_ndim=nd), u),
    "top_q": lambda u, p, nd: _transform(ptx.top_q(0.5, param_ndim=nd), u),
    "top_q_dq": lambda u, p, nd: _transform(ptx.top_q(0.5, dq=0.3, param_ndim=nd, seed=2), u),
    "lmo_l1": lambda u, p, nd: _transform(ptx.lmo_l1(param_ndim=nd), u),
    "lmo_l1q": lambda u, p, nd: _transform(ptx.lmo_l1q(0.5, param_ndim=nd), u),
    "project_l2_ball": lambda u, p, nd: ptx.project_l2_ball(u, 0.5, param_ndim=nd),
    "project_l1_ball": lambda u, p, nd: ptx.project_l1_ball(u, 0.5, param_ndim=nd),
    "project_linf_ball": lambda u, p, nd: ptx.project_linf_ball(u, torch.tensor([0.5]), param_ndim=nd),
    "projected": lambda u, p, nd: _transform(ptx.projected(ptx.project_l2_ball, epsilon=0.5, param_ndim=nd), u, p),
    "frank_wolfe": lambda u, p, nd: _fw(nd)(u, p),
}


def _leafwise(call, updates, params, ndims: dict) -> dict:
    """The reference: each leaf alone, with its own int (or None)."""
    out = {}
    for part in updates:
        out[part] = {}
        for key, leaf in updates[part].items():
            if leaf is None:
                out[part][key] = None
                continue
            single = call({"x": leaf}, {"x": params[part][key]}, ndims[part][key])
            out[part][key] = single["x"]
    return out


def _assert_trees_equal(got: dict, want: dict) -> None:
    for part in want:
        for key in want[part]:
            if want[part][key] is None:
                assert got[part][key] is None
            else:
                assert torch.equal(got[part][key], want[part][key]), (part, key)


@pytest.mark.parametrize("name", CALLS)
def test_each_leaf_gets_what_its_own_param_ndim_gives(name):
    if name == "top_q_dq":  # each leaf draws its own level by its index in the tree: compare whole trees
        updates = _tree()
        got = CALLS[name](updates, updates, PER_LEAF)
        same = CALLS[name](updates, updates, {"encoder": {"weight": -1, "bias": None}, "decoder": {"weight": 1, "bias": 0}})
        _assert_trees_equal(got, same)
        return
    updates, params = _tree(), _tree(seed=1)
    call = CALLS[name]
    ndims = {"encoder": {"weight": -1, "bias": None}, "decoder": {"weight": 1, "bias": 0}}
    _assert_trees_equal(call(updates, params, PER_LEAF), _leafwise(call, updates, params, ndims))
    prefix_ndims = {"encoder": {"weight": None, "bias": None}, "decoder": {"weight": -2, "bias": -2}}
    _assert_trees_equal(call(updates, params, PREFIX), _leafwise(call, updates, params, prefix_ndims))
    rule_ndims = {"encoder": {"weight": -1, "bias": None}, "decoder": {"weight": -1, "bias": None}}
    _assert_trees_equal(call(updates, params, by_rule), _leafwise(call, updates, params, rule_ndims))


def test_a_callable_is_asked_with_each_leafs_path_and_shape():
    asked = []

    def rule(path, shape):
        asked.append((path, shape))
        return None

    ptx.project_l2_ball(_tree(), 1.0, param_ndim=rule)
    assert asked == [  # in the params' leaf order (optree sorts dict keys); a None leaf is not asked about
        (("decoder", "weight"), (3, 2, 5)),
        (("encoder", "bias"), (6,)),
        (("encoder", "weight"), (4, 6)),
    ]


def test_per_datum_budgets_follow_each_leafs_own_batch():
    params = {"a": torch.randn(4, 3), "b": torch.randn(2, 4, 3)}
    epsilon = torch.tensor([0.5, 1.0, 1.5, 2.0])  # 4 data: a's rows, and b's (4, 3) slices along dim 1
    got = ptx.project_l2_ball(params, epsilon, param_ndim={"a": -1, "b": 1})
    assert torch.equal(got["a"], ptx.project_l2_ball(params["a"], epsilon))
    assert torch.equal(got["b"], ptx.project_l2_ball(params["b"], epsilon, param_ndim=1))


def _raises(error, *fragments):
    return pytest.raises(error, match=re.compile(".*".join(map(re.escape, fragments)), re.DOTALL))


def test_misfits_are_errors_naming_the_leaf():
    tree = _tree()
    with _raises(ValueError, "normalize:", "param_ndim=3", "leaf encoder/bias", "(6,)"):
        _transform(ptx.normalize(param_ndim={"encoder": 3, "decoder": -1}), tree)
    with _raises(ValueError, "project_l1_ball:", "param_ndim", "prefix"):
        ptx.project_l1_ball(tree, 1.0, param_ndim={"encoder": -1})  # a key missing
    with _raises(TypeError, "top_q:", "param_ndim at leaf decoder/weight", "'x'"):
        _transform(ptx.top_q(0.5, param_ndim=lambda path, shape: "x" if path[0] == "decoder" else -1), tree)
    with _raises(TypeError, "lmo_l1:", "param_ndim", "at decoder", "1.5"):
        ptx.lmo_l1(param_ndim={"encoder": -1, "decoder": 1.5})
    with _raises(ValueError, "frank_wolfe:", "param_ndim=-4", "leaf decoder/weight"):
        _fw({"encoder": -1, "decoder": -4})(tree, tree)
    with _raises(ValueError, "projected:", "param_ndim", "prefix"):
        ptx.projected(ptx.project_l2_ball, epsilon=1.0, param_ndim={"w": 1}).update({"v": tree["encoder"]["bias"]}, (), {"v": tree["encoder"]["bias"]})


def test_a_compiled_step_with_param_ndim_per_leaf_has_no_graph_break():
    torch._dynamo.reset()
    tx = ptx.chain(ptx.top_q(0.5, param_ndim=PER_LEAF), ptx.normalize(param_ndim=by_rule))
    step = lambda u: _transform(tx, u)  # noqa: E731
    counter = CompileCounter()
    compiled = torch.compile(step, backend=counter, fullgraph=True, dynamic=False)
    updates = _tree()
    _assert_trees_equal(compiled(updates), step(updates))
    assert counter.frame_count == 1
