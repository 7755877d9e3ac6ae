"""Bad input gives a ``TypeError`` (wrong kind) or ``ValueError`` (out of range)
whose message starts with the API's name and names the argument and the value."""

from __future__ import annotations

import math
import re

import pytest
import torch

import paramtx as ptx
from transforms_registry import ENTRIES, Entry


def raises(error, api: str, *fragments: str):
    """``pytest.raises`` matching ``api:`` at the start and every fragment, in order."""
    pattern = "^" + re.escape(api + ":") + "".join(".*" + re.escape(f) for f in fragments)
    return pytest.raises(error, match=re.compile(pattern, re.DOTALL))


X = torch.ones(2, 3)

# ----------------------------------------------------------------------------- ranges


@pytest.mark.parametrize("factory", ["top_q", "lmo_l1q"])
@pytest.mark.parametrize("argument, value", [("q", 1.5), ("q", -0.1), ("dq", 1.01), ("dq", -0.5)])
def test_q_and_dq_outside_zero_one_are_value_errors(factory, argument, value):
    kwargs = {"q": 0.5, argument: value}
    with raises(ValueError, factory, f"{argument} must satisfy 0 <= {argument} <= 1", f"got {value!r}"):
        getattr(ptx, factory)(**kwargs)


@pytest.mark.parametrize("epsilon", [0.0, -1.0], ids=str)
@pytest.mark.parametrize(
    "api, call",
    [
        ("project_l2_ball", lambda e: ptx.project_l2_ball(X, epsilon=e)),
        ("project_l1_ball", lambda e: ptx.project_l1_ball(X, epsilon=e)),
        ("project_linf_ball", lambda e: ptx.project_linf_ball(X, epsilon=e)),
        ("frank_wolfe", lambda e: ptx.frank_wolfe(epsilon=e)),
        # projected checks its options when it is built, through the projection
        ("project_l2_ball", lambda e: ptx.projected(ptx.project_l2_ball, epsilon=e)),
    ],
    ids=["l2", "l1", "linf", "frank_wolfe", "projected"],
)
def test_epsilon_not_positive_is_a_value_error(api, call, epsilon):
    with raises(ValueError, api, "epsilon must satisfy 0 < epsilon", f"got {epsilon!r}"):
        call(epsilon)


@pytest.mark.parametrize("p", [0.5, 0.0, -2.0, -math.inf], ids=str)
def test_p_below_one_is_a_value_error(p):
    with raises(ValueError, "normalize", "p must satisfy p >= 1", f"got {p!r}"):
        ptx.normalize(p=p)


@pytest.mark.parametrize(
    "api, call, argument",
    [
        ("normalize", lambda: ptx.normalize(p=math.nan), "p"),
        ("scale", lambda: ptx.scale(math.nan), "step_size"),
        ("top_q", lambda: ptx.top_q(q=math.nan), "q"),
        ("frank_wolfe", lambda: ptx.frank_wolfe(epsilon=math.nan), "epsilon"),
    ],
    ids=["normalize", "scale", "top_q", "frank_wolfe"],
)
def test_nan_hyper_parameters_are_value_errors(api, call, argument):
    with raises(ValueError, api, f"{argument} must not be NaN", "got nan"):
        call()


@pytest.mark.parametrize(
    "api, call, fragments",
    [
        ("normalize", lambda: ptx.normalize(eps=-1.0), ["eps must satisfy 0 <= eps", "got -1.0"]),
        ("top_q", lambda: ptx.top_q(0.5, seed=-1), ["seed must satisfy seed >= 0", "got -1"]),
        ("sgd", lambda: ptx.sgd(lr=-0.1), ["lr must satisfy 0 <= lr", "got -0.1"]),
        ("sgd", lambda: ptx.sgd(momentum=-0.9), ["momentum must satisfy 0 <= momentum", "got -0.9"]),
        ("sgd", lambda: ptx.sgd(weight_decay=-1), ["weight_decay must satisfy 0 <= weight_decay", "got -1.0"]),
        ("adam", lambda: ptx.adam(betas=(1.0, 0.999)), ["betas[0] must satisfy 0 <= betas[0] < 1", "got 1.0"]),
        ("adam", lambda: ptx.adam(betas=(0.9, -0.1)), ["betas[1] must satisfy 0 <= betas[1] < 1", "got -0.1"]),
        ("adam", lambda: ptx.adam(eps=-1e-8), ["eps must satisfy 0 < eps", "got -1e-08"]),
        ("frank_wolfe", lambda: ptx.frank_wolfe(1.0, lr=-1.0), ["lr must satisfy 0 <= lr", "got -1.0"]),
        ("lmo_l1q", lambda: ptx.lmo_l1q(0.5, eps=-1.0), ["eps must satisfy 0 <= eps", "got -1.0"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_other_out_of_range_hyper_parameters_are_value_errors(api, call, fragments):
    with raises(ValueError, api, *fragments):
        call()


def test_frank_wolfe_lr_above_one_without_the_schedule_is_a_value_error():
    with raises(ValueError, "frank_wolfe", "lr must satisfy 0 <= lr <= 1", "got 1.5"):
        ptx.frank_wolfe(1.0, lr=1.5, use_default_lr_schedule=False)
    ptx.frank_wolfe(1.0, lr=1.5)  # with the schedule, lr is only a constant of alpha_k = lr / (lr + k)


def test_clamp_needs_a_bound_and_min_at_most_max():
    with raises(ValueError, "clamp", "at least one of min and max", "got min=None, max=None"):
        ptx.clamp()
    with raises(ValueError, "clamp", "min must satisfy min <= max", "got min=2.0, max=1.0"):
        ptx.clamp(2.0, 1.0)


def test_project_box_needs_lower_at_most_upper():
    with raises(ValueError, "project_box", "lower must satisfy lower <= upper", "got lower=1.0, upper=0.0"):
        ptx.project_box(X, lower=1.0, upper=0.0)


@pytest.mark.parametrize("momentum, dampening", [(0.0, 0.0), (0.9, 0.1)], ids=["no_momentum", "dampening"])
def test_nesterov_needs_momentum_and_no_dampening(momentum, dampening):
    with raises(
        ValueError, "sgd", "nesterov=True requires momentum > 0 and dampening = 0",
        f"got momentum={momentum!r}, dampening={dampening!r}",
    ):
        ptx.sgd(0.1, momentum=momentum, dampening=dampening, nesterov=True)


# ----------------------------------------------------------------------------- kinds


@pytest.mark.parametrize(
    "api, call, argument, shown",
    [
        ("scale", lambda: ptx.scale("2"), "step_size", "'2'"),
        ("scale", lambda: ptx.scale(True), "step_size", "True"),
        ("add", lambda: ptx.add(None), "bias", "None"),
        ("clamp", lambda: ptx.clamp(min="0"), "min", "'0'"),
        ("clamp", lambda: ptx.clamp(max=[1.0]), "max", "[1.0]"),
        ("normalize", lambda: ptx.normalize(p="2"), "p", "'2'"),
        ("normalize", lambda: ptx.normalize(eps=torch.tensor(True)), "eps", "torch.bool"),  # (real tensors are settings)
        ("top_q", lambda: ptx.top_q(q="0.5"), "q", "'0.5'"),
        ("top_q", lambda: ptx.top_q(0.5, dq=None), "dq", "None"),
        ("top_q", lambda: ptx.top_q(0.5, seed=1.5), "seed", "1.5"),
        ("lmo_l1q", lambda: ptx.lmo_l1q(q=[0.5]), "q", "[0.5]"),
        ("sgd", lambda: ptx.sgd(lr="0.1"), "lr", "'0.1'"),
        ("sgd", lambda: ptx.sgd(momentum=None), "momentum", "None"),
        ("sgd", lambda: ptx.sgd(nesterov=1), "nesterov", "1"),
        ("adam", lambda: ptx.adam(lr=None), "lr", "None"),
        ("adam", lambda: ptx.adam(betas=(0.9, "0.999")), "betas[1]", "'0.999'"),
        ("adam", lambda: ptx.adam(betas=0.9), "betas", "0.9"),
        ("frank_wolfe", lambda: ptx.frank_wolfe(epsilon="1"), "epsilon", "'1'"),
        ("frank_wolfe", lambda: ptx.frank_wolfe(1.0, lr=torch.tensor(2j)), "lr", "torch.complex64"),
        ("frank_wolfe", lambda: ptx.frank_wolfe(1.0, use_default_lr_schedule=1), "use_default_lr_schedule", "1"),
        ("project_l2_ball", lambda: ptx.project_l2_ball(X, epsilon="1"), "epsilon", "'1'"),
        ("project_box", lambda: ptx.project_box(X, lower="a", upper=1.0), "lower", "'a'"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.isidentifier() else None,
)
def test_non_number_hyper_parameters_are_type_errors(api, call, argument, shown):
    with raises(TypeError, api, argument, shown):
        call()


@pytest.mark.parametrize("value", [1.0, "1", True, (1.5,)], ids=repr)  # ((1,): a per-leaf pytree)
@pytest.mark.parametrize(
    "api, make",
    [
        ("normalize", lambda nd: ptx.normalize(param_ndim=nd)),
        ("top_q", lambda nd: ptx.top_q(0.5, param_ndim=nd)),
        ("lmo_l1", lambda nd: ptx.lmo_l1(param_ndim=nd)),
        ("lmo_l1q", lambda nd: ptx.lmo_l1q(0.5, param_ndim=nd)),
        ("normalize", lambda nd: ptx.lmo_l2(param_ndim=nd)),  # lmo_l2 is normalize(p=2)
        ("project_l2_ball", lambda nd: ptx.project_l2_ball(X, 1.0, param_ndim=nd)),
        ("project_l1_ball", lambda nd: ptx.project_l1_ball(X, 1.0, param_ndim=nd)),
    ],
    ids=["normalize", "top_q", "lmo_l1", "lmo_l1q", "lmo_l2", "project_l2_ball", "project_l1_ball"],
)
def test_non_int_param_ndim_is_a_type_error(api, make, value):
    with raises(TypeError, api, "param_ndim must be an int or None", f"got {value!r}"):
        make(value)


def test_param_ndim_too_large_for_a_leaf_is_a_value_error_naming_both():
    tx = ptx.normalize(param_ndim=-3)
    with raises(ValueError, "normalize", "param_ndim=-3", "ndim=2"):
        tx.update({"w": X}, tx.init(None))


def test_chain_of_a_non_transform_is_a_type_error():
    with raises(TypeError, "chain", "argument 1 must be a GradientTransformation", "got <function"):
        ptx.chain(ptx.sign(), lambda u: u)


def test_projected_checks_its_projection_and_options_when_built():
    with raises(TypeError, "projected", "projection must be callable", "got 3"):
        ptx.projected(3)
    with raises(TypeError, "projected", "options ['eps'] do not fit project_l2_ball"):
        ptx.projected(ptx.project_l2_ball, eps=1.0)


# ----------------------------------------------------------------------------- tensors


BAD_LEAVES = [
    (torch.tensor([1, 2]), ("must be real floating-point tensors", "got dtype torch.int64")),
    (torch.tensor([1 + 2j, 0j]), ("must be real floating-point tensors", "got dtype torch.complex64")),
    (torch.tensor([True, False]), ("must be real floating-point tensors", "got dtype torch.bool")),
    (torch.tensor([1.0, 0.0]).to_sparse(), ("must be dense tensors", "got layout torch.sparse_coo")),
    (1.5, ("every leaf of updates must be a torch.Tensor or None", "got float")),
]

# identity and the empty chain return their updates untouched by design (no maths, no checks)
CHECKING = [entry for entry in ENTRIES if entry.name not in ("identity", "chain_empty")]


@pytest.mark.parametrize("leaf, fragments", BAD_LEAVES, ids=["int", "complex", "bool", "sparse", "float"])
@pytest.mark.parametrize("entry", CHECKING, ids=repr)
def test_update_rejects_non_float_and_sparse_update_leaves_naming_the_leaf(entry: Entry, leaf, fragments):
    tx = entry.build(-1)
    params = {"good": torch.ones(2), "bad": torch.ones(2)}
    updates = {"good": torch.ones(2), "bad": leaf}
    with pytest.raises(TypeError, match=re.compile(".*".join(map(re.escape, [*fragments, "at leaf bad"])))):
        tx.update(updates, tx.init(params), params)


def test_sparse_gradient_message_says_how_to_convert():
    tx = ptx.normalize()
    with raises(TypeError, "normalize", "updates must be dense tensors", "torch.sparse_coo", ".to_dense()"):
        tx.update([torch.ones(3).to_sparse()], tx.init(None))


@pytest.mark.parametrize("param", [torch.tensor([1, 2]), torch.tensor([1 + 0j, 2j])], ids=["int", "complex"])
def test_apply_updates_rejects_a_non_float_parameter_instead_of_truncating(param):
    with raises(TypeError, "apply_updates", "params must be real floating-point tensors", str(param.dtype), "leaf w"):
        ptx.apply_updates({"w": param}, {"w": torch.tensor([0.5, 0.7])})
    # a non-float parameter without an update is left alone (e.g. an integer buffer)
    assert ptx.apply_updates({"w": param}, {"w": None})["w"] is param


# ----------------------------------------------------------------------------- structures


NEEDS_PARAMS = [entry for entry in ENTRIES if entry.needs_params]


@pytest.mark.parametrize("entry", NEEDS_PARAMS, ids=repr)
def test_params_with_another_structure_than_the_updates_is_a_value_error(entry: Entry):
    tx = entry.build(-1)
    updates = {"a": torch.ones(2), "b": torch.ones(2)}
    state = tx.init(updates)
    with pytest.raises(ValueError, match=r"params must have the same tree structure as the updates"):
        tx.update(updates, state, {"a": torch.ones(2), "c": torch.ones(2)})


@pytest.mark.parametrize("entry", NEEDS_PARAMS, ids=repr)
def test_missing_params_is_a_value_error(entry: Entry):
    tx = entry.build(-1)
    updates = [torch.ones(2)]
    with pytest.raises(ValueError, match=r"needs params"):
        tx.update(updates, tx.init(updates))


def test_apply_updates_with_another_structure_is_a_value_error():
    with raises(ValueError, "apply_updates", "params must have the same tree structure", "updates have"):
        ptx.apply_updates({"a": torch.ones(1)}, {"b": torch.ones(1)})


@pytest.mark.parametrize(
    "make",
    [
        lambda: ptx.sgd(0.1, momentum=0.9),
        lambda: ptx.sgd(0.1, momentum=0.9, dampening=0.5),
        lambda: ptx.adam(),
        lambda: ptx.frank_wolfe(1.0),
    ],
    ids=["sgd_momentum", "sgd_dampening", "adam", "frank_wolfe"],
)
def test_a_state_built_for_other_params_is_a_value_error(make):
    tx = make()
    params = {"a": torch.ones(2), "b": torch.ones(2)}
    other = tx.init({"a": torch.ones(2), "c": torch.ones(2)})
    with pytest.raises(ValueError, match=r"state must have the same tree structure as the updates"):
        tx.update(params, other, params)


def test_chain_rejects_a_state_of_another_length_or_type():
    tx = ptx.chain(ptx.normalize(), ptx.sgd(0.1, momentum=0.9))
    x = {"a": torch.ones(2)}
    state = tx.init(x)
    with raises(ValueError, "chain", "state must be the tuple of 2 states", "got tuple"):
        tx.update(x, state + (ptx.EmptyState(),), x)
    with raises(ValueError, "chain", "state must be the tuple of 2 states", "got list"):
        tx.update(x, list(state), x)
    with raises(ValueError, "chain", "state must be the tuple of 2 states", "got SgdState"):
        tx.update(x, state[1], x)


@pytest.mark.parametrize(
    "make_other, api, expected, got",
    [
        (lambda: ptx.chain(ptx.top_q(0.5), ptx.sgd(0.1, momentum=0.9)), "top_q", "TopQState", "EmptyState"),
        (lambda: ptx.chain(ptx.normalize(), ptx.adam()), "adam", "AdamState", "SgdState"),
        (lambda: ptx.chain(ptx.lmo_l1q(0.5), ptx.frank_wolfe(1.0)), "lmo_l1q", "TopQState", "EmptyState"),
        (lambda: ptx.chain(ptx.lmo_l1(), ptx.frank_wolfe(1.0)), "frank_wolfe", "FrankWolfeState", "SgdState"),
        (lambda: ptx.chain(ptx.normalize(), ptx.sgd(0.1)), "sgd", "EmptyState", "SgdState"),
    ],
    ids=["top_q", "adam", "lmo_l1q", "frank_wolfe", "sgd_without_momentum"],
)
def test_a_state_from_another_chain_is_a_value_error_naming_the_state(make_other, api, expected, got):
    source = ptx.chain(ptx.normalize(), ptx.sgd(0.1, momentum=0.9))
    x = {"a": torch.ones(2)}
    state = source.init(x)
    tx = make_other()
    with raises(ValueError, api, f"state must be the {expected}", f"got {got}"):
        tx.update(x, state, x)


@pytest.mark.parametrize(
    "api, tx",
    [
        ("sgd", lambda: ptx.sgd(0.1, weight_decay=0.1)),
        ("adam", lambda: ptx.adam(0.1, weight_decay=0.1)),
        ("frank_wolfe", lambda: ptx.frank_wolfe(0.1)),
        ("projected", lambda: ptx.projected(ptx.project_l2_ball, epsilon=1.0)),
    ],
)
def test_a_missing_parameter_that_the_update_needs_is_a_value_error_naming_the_leaf(api, tx):
    tx = tx()
    updates, params = {"w": X, "b": X}, {"w": X, "b": None}
    with raises(ValueError, api, "leaf b", "None"):
        tx.update(updates, tx.init(params), params)
