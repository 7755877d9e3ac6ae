"""Bad input raises when the optimizer is built (or the group added), with a
message that names the argument and quotes the value.

The parity tests check that the exception types equal rai-toolbox's; the
cases marked "stricter" are ones rai-toolbox 0.2.1 accepts and paramtx does not.
"""

from __future__ import annotations

import inspect
import re
from functools import partial

import pytest
import torch

import paramtx as ptx
import paramtx.optim as pto


def _x():
    return torch.zeros(2, 3, requires_grad=True)


# (case, build, exception type, words the message must contain)
CASES = [
    ("q > 1", lambda: pto.TopQGradientOptimizer([_x()], q=1.5), ValueError, ["q", "1.5"]),
    ("q < 0", lambda: pto.L1qNormedGradientOptim([_x()], q=-0.25), ValueError, ["q", "-0.25"]),
    ("q < 0 (Frank-Wolfe)", lambda: pto.L1qFrankWolfe([_x()], q=-1, epsilon=1.0), ValueError, ["q", "-1"]),
    ("q not a number", lambda: pto.TopQGradientOptimizer([_x()], q="high"), TypeError, ["q", "'high'"]),
    ("q None (stricter)", lambda: pto.TopQGradientOptimizer([_x()], q=None), TypeError, ["q", "None"]),
    ("q > 1 in a group", lambda: pto.TopQGradientOptimizer([{"params": [_x()], "q": 2}], q=0.5), ValueError, ["q", "2"]),
    ("dq > 1", lambda: pto.TopQGradientOptimizer([_x()], q=0.5, dq=1.5), ValueError, ["dq", "1.5"]),
    ("q missing", lambda: pto.TopQGradientOptimizer([_x()]), TypeError, ["q"]),
    ("epsilon < 0", lambda: pto.L2ProjectedOptim([_x()], epsilon=-1.0), ValueError, ["epsilon", "-1.0"]),
    ("epsilon = 0 (stricter)", lambda: pto.LinfProjectedOptim([_x()], epsilon=0), ValueError, ["epsilon", "0"]),
    ("epsilon not a number", lambda: pto.L2ProjectedOptim([_x()], epsilon="1"), TypeError, ["epsilon", "'1'"]),
    ("epsilon missing", lambda: pto.L2ProjectedOptim([_x()]), TypeError, ["epsilon"]),
    ("epsilon <= 0 in a group", lambda: pto.L2ProjectedOptim([{"params": [_x()], "epsilon": 0.0}], epsilon=1.0), ValueError, ["epsilon", "0.0"]),
    ("FW epsilon = 0 (stricter)", lambda: pto.L1FrankWolfe([_x()], epsilon=0.0), ValueError, ["epsilon", "0.0"]),
    ("FW epsilon < 0 (stricter)", lambda: pto.L2FrankWolfe([_x()], epsilon=-2), ValueError, ["epsilon", "-2"]),
    ("FW epsilon not a number", lambda: pto.LinfFrankWolfe([_x()], epsilon="big"), TypeError, ["epsilon", "'big'"]),
    ("FW epsilon <= 0 in a group (stricter)",
     lambda: pto.L1qFrankWolfe([{"params": [_x()], "lmo_scaling_factor": -1.0}], q=0.5, epsilon=1.0),
     ValueError, ["epsilon", "-1.0"]),
    ("FW lr > 1 without the schedule",
     lambda: pto.L2FrankWolfe([_x()], epsilon=1.0, lr=1.5, use_default_lr_schedule=False), ValueError, ["lr", "1.5"]),
    ("FW lr < 0 without the schedule",
     lambda: pto.FrankWolfe([_x()], lr=-0.5, use_default_lr_schedule=False), ValueError, ["lr", "-0.5"]),
    ("FW lr > 1 without the schedule, in a group",
     lambda: pto.FrankWolfe([{"params": [_x()], "lr": 3.0}], lr=0.5, use_default_lr_schedule=False), ValueError, ["lr", "3.0"]),
    ("FW lr < 0 with the schedule", lambda: pto.L1FrankWolfe([_x()], epsilon=1.0, lr=-1.0), ValueError, ["lr", "-1.0"]),
    ("FW use_default_lr_schedule not a bool",
     lambda: pto.FrankWolfe([_x()], use_default_lr_schedule=1), TypeError, ["use_default_lr_schedule", "1"]),
    ("param_ndim a float", lambda: pto.L2NormedGradientOptim([_x()], param_ndim=1.0), TypeError, ["param_ndim", "1.0"]),
    ("param_ndim a bool (stricter)", lambda: pto.SignedGradientOptim([_x()], param_ndim=True), TypeError, ["param_ndim", "True"]),
    ("param_ndim a str in a group",
     lambda: pto.TopQGradientOptimizer([{"params": [_x()], "param_ndim": "1"}], q=0.5), TypeError, ["param_ndim", "'1'"]),
    ("|param_ndim| > ndim", lambda: pto.L2ProjectedOptim([_x()], epsilon=1.0, param_ndim=3), ValueError, ["param_ndim=3", "ndim=2"]),
    ("|param_ndim| > ndim, negative", lambda: pto.L1FrankWolfe([_x()], epsilon=1.0, param_ndim=-4), ValueError, ["param_ndim=-4", "ndim=2"]),
    ("InnerOpt a string", lambda: pto.L2NormedGradientOptim([_x()], InnerOpt="SGD"), TypeError, ["InnerOpt", "'SGD'"]),
    ("InnerOpt a non-optimizer class", lambda: pto.ParamTransformingOptimizer([_x()], InnerOpt=dict), TypeError, ["InnerOpt", "dict"]),
    ("InnerOpt a partial of a non-optimizer",
     lambda: pto.SignedGradientOptim([_x()], InnerOpt=partial(len)), TypeError, ["InnerOpt", "len"]),
    ("params=None with an optimizer class",
     lambda: pto.ParamTransformingOptimizer(None, InnerOpt=torch.optim.SGD), TypeError, ["params", "None"]),
    ("params=None, chained", lambda: pto.ChainedParamTransformingOptimizer(pto.SignedGradientOptim), TypeError, ["params", "None"]),
    ("grad_scale not a number", lambda: pto.L1NormedGradientOptim([_x()], grad_scale="2"), TypeError, ["grad_scale", "'2'"]),
    ("grad_bias not a number", lambda: pto.SignedGradientOptim([_x()], grad_bias=None), TypeError, ["grad_bias", "None"]),
    ("div_by_zero_eps < 0", lambda: pto.L2NormedGradientOptim([_x()], div_by_zero_eps=-1e-3), ValueError, ["div_by_zero_eps", "-0.001"]),
    ("generator not a Generator", lambda: pto.L1qFrankWolfe([_x()], q=0.5, epsilon=1.0, generator=3), TypeError, ["generator", "3"]),
    ("clamp bounds both None", lambda: pto.ClampedGradientOptimizer([_x()]), ValueError, ["clamp_min", "clamp_max", "None"]),
    ("clamp_min > clamp_max", lambda: pto.ClampedParameterOptimizer([_x()], clamp_min=1, clamp_max=0), ValueError, ["clamp_min=1", "clamp_max=0"]),
    ("clamp_max not a number (stricter)", lambda: pto.ClampedParameterOptimizer([_x()], clamp_max="1"), TypeError, ["clamp_max", "'1'"]),
    ("chain member not an optimizer",
     lambda: pto.ChainedParamTransformingOptimizer(len, params=[_x()]), TypeError, ["transforming_optimizers[0]", "len"]),
    ("generic: tx not a GradientTransformation",
     lambda: pto.GradientTransformationOptimizer([_x()], lambda g: g), TypeError, ["tx"]),
    ("generic: projection not callable",
     lambda: pto.GradientTransformationOptimizer([_x()], ptx.sign(), projection=1.0), TypeError, ["projection", "1.0"]),
    ("generic: inner arguments without InnerOpt",
     lambda: pto.GradientTransformationOptimizer([_x()], ptx.sign(), lr=0.1), TypeError, ["InnerOpt", "lr"]),
    ("generic: params=None without InnerOpt",
     lambda: pto.GradientTransformationOptimizer(None, ptx.sign()), TypeError, ["params", "None"]),
]


@pytest.mark.parametrize("case, build, error, words", CASES, ids=[case[0] for case in CASES])
def test_bad_input_raises_at_construction_naming_the_argument(case, build, error, words):
    with pytest.raises(error) as info:
        build()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


@pytest.mark.parametrize(
    "group, words",
    [
        ({"q": 1.5}, ["q", "1.5"]),
        ({"param_ndim": 7}, ["param_ndim=7"]),
        ({"grad_scale": "x"}, ["grad_scale", "'x'"]),
        ({"clamp_max": -5.0}, ["clamp_min", "clamp_max"]),
        ({"dq": None}, ["dq", "None"]),
    ],
)
def test_add_param_group_checks_the_new_group_and_leaves_the_optimizer_unchanged(group, words):
    # rai-toolbox adds such groups unchecked; they fail (or misbehave) at the next step.
    optimizer = pto.ChainedParamTransformingOptimizer(
        partial(pto.TopQGradientOptimizer, q=0.5),
        partial(pto.ClampedGradientOptimizer, clamp_min=-1.0),
        params=[_x()],
        lr=0.1,
    )
    before = repr(optimizer)
    with pytest.raises((TypeError, ValueError)) as info:
        optimizer.add_param_group({"params": [_x()], **group})
    for word in words:
        assert word in str(info.value)
    assert repr(optimizer) == before
    assert len(optimizer.inner_opt.param_groups) == 1


def test_frank_wolfe_add_param_group_checks_lr_against_the_schedule():
    optimizer = pto.FrankWolfe([_x()], lr=0.5, use_default_lr_schedule=False)
    with pytest.raises(ValueError, match=re.escape("lr must satisfy 0 <= lr <= 1, got 2.0")):
        optimizer.add_param_group({"params": [_x()], "lr": 2.0})
    assert len(optimizer.param_groups) == 1
    optimizer.add_param_group({"params": [_x()], "lr": 1.0})
    assert len(optimizer.param_groups) == 2


def test_messages_start_with_the_class_name():
    # ... then the group, the key and the value
    with pytest.raises(ValueError, match=r"^L2ProjectedOptim \(parameter group 0\): epsilon must satisfy 0 < epsilon, got -1.0$"):
        pto.L2ProjectedOptim([_x()], epsilon=-1.0)
    with pytest.raises(ValueError, match=r"^TopQGradientOptimizer \(parameter group 0\): q must satisfy 0 <= q <= 1, got 1.5$"):
        pto.TopQGradientOptimizer([_x()], q=1.5)


def test_epsilon_and_q_are_required_where_rai_toolbox_silently_uses_0_001():
    # rai-toolbox 0.2.1 takes its "required" marker from torch.optim.SGD's lr default,
    # which is 1e-3 since torch 2.x: its L2ProjectedOptim([x]) runs with epsilon=0.001.
    rai = pytest.importorskip("rai_toolbox.optim")
    assert rai.L2ProjectedOptim([_x()]).defaults["epsilon"] == 0.001
    assert rai.TopQGradientOptimizer([_x()]).defaults["q"] == 0.001
    for cls, name in [(pto.L2ProjectedOptim, "epsilon"), (pto.LinfProjectedOptim, "epsilon"),
                      (pto.TopQGradientOptimizer, "q"), (pto.L1qNormedGradientOptim, "q")]:
        assert inspect.signature(cls).parameters[name].default is inspect.Parameter.empty
        with pytest.raises(TypeError, match=f"missing 1 required keyword-only argument: '{name}'"):
            cls([_x()])
    # the argument is every group's default; a group may override it
    optimizer = pto.L2ProjectedOptim([{"params": [_x()], "epsilon": 0.5}, {"params": [_x()]}], epsilon=1.0)
    assert [group["epsilon"] for group in optimizer.param_groups] == [0.5, 1.0]


def test_a_scalar_parameter_is_one_datum_whatever_param_ndim():
    # DESIGN.md's param_ndim rule: a 0-d tensor is one datum. rai-toolbox raises
    # ValueError for a scalar with its default param_ndim=-1.
    w = torch.tensor(3.0, requires_grad=True)
    optimizer = pto.L2ProjectedOptim([w], epsilon=1.0, lr=0.5)
    w.grad = torch.tensor(-2.0)
    optimizer.step()
    assert w.grad.item() == -1.0 and w.item() == 1.0
