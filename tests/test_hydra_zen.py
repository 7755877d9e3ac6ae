"""hydra-zen (what rai-toolbox's users configure with) builds every shim and every public factory.

``hydra_zen.builds(X, populate_full_signature=True)`` reads each signature: a
required setting must have no default (so that leaving it out is an ordinary
missing-argument error), and every default must be a value a config can hold.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

import paramtx as ptx
import paramtx.optim as pto

hz = pytest.importorskip("hydra_zen")

# what a config must give: the required settings of each class and factory
REQUIRED = {
    "TopQGradientOptimizer": dict(q=0.5),
    "L1qNormedGradientOptim": dict(q=0.5),
    "L1qFrankWolfe": dict(q=0.5, epsilon=1.0),
    "L2ProjectedOptim": dict(epsilon=1.0),
    "LinfProjectedOptim": dict(epsilon=1.0),
    "L1FrankWolfe": dict(epsilon=1.0),
    "L2FrankWolfe": dict(epsilon=1.0),
    "LinfFrankWolfe": dict(epsilon=1.0),
    "top_q": dict(q=0.5),
    "lmo_l1q": dict(q=0.5),
    "frank_wolfe": dict(epsilon=1.0),
    "ClampedGradientOptimizer": dict(clamp_max=1.0),
    "ClampedParameterOptimizer": dict(clamp_min=-1.0),
    "scale": dict(step_size=-0.1),
    "add": dict(bias=0.1),
    "clip_by_global_norm": dict(max_norm=1.0),
    # (hydra_convert="all": masks and labels arrive as plain dicts, which are pytrees; OmegaConf's are not)
    "masked": dict(inner=hz.builds(ptx.sgd, lr=0.1), mask={"w": True}, hydra_convert="all"),
    "multi_transform": dict(transforms={"a": hz.builds(ptx.sgd, lr=0.1)}, param_labels={"w": "a"}, hydra_convert="all"),
}
OPTIONAL_BUT_ONE = {"clamp": dict(max=1.0)}  # clamp needs one of its two optional bounds


def _required(name: str) -> dict:
    if name == "ChainedParamTransformingOptimizer":
        return {}
    if name == "GradientTransformationOptimizer":
        return dict(tx=hz.builds(ptx.sgd, lr=0.1))
    if name == "projected":
        return dict(projection=hz.just(ptx.project_l2_ball), epsilon=1.0)
    return REQUIRED.get(name, OPTIONAL_BUT_ONE.get(name, {}))


SHIMS = [name for name in pto.__all__ if name != "ChainedParamTransformingOptimizer"]
FACTORIES = [
    name for name in ptx.__all__
    if inspect.isfunction(getattr(ptx, name)) and inspect.signature(getattr(ptx, name)).return_annotation == "GradientTransformation"
]


@pytest.mark.parametrize("name", SHIMS)
def test_every_shim_builds_and_instantiates_as_a_partial(name):
    config = hz.builds(getattr(pto, name), populate_full_signature=True, zen_partial=True, **_required(name))
    w = torch.nn.Parameter(torch.zeros(3, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer = hz.instantiate(config)(params=[w])
    assert type(optimizer) is getattr(pto, name)
    w.grad = torch.ones(3, 2)
    optimizer.step()


@pytest.mark.parametrize("name", [n for n in SHIMS if REQUIRED.get(n) and "Clamped" not in n])
def test_a_missing_required_setting_is_the_ordinary_missing_argument_error(name):
    config = hz.builds(getattr(pto, name), populate_full_signature=True, zen_partial=True)
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument|missing 2 required keyword-only arguments"):
        hz.instantiate(config)(params=[torch.nn.Parameter(torch.zeros(3))])


def test_the_generator_default_is_none_meaning_torchs_default_generator():
    for name in ("TopQGradientOptimizer", "L1qNormedGradientOptim", "L1qFrankWolfe"):
        assert inspect.signature(getattr(pto, name)).parameters["generator"].default is None
    # the same draws as with torch.default_generator given explicitly
    counts = []
    for generator in (None, torch.default_generator):
        torch.manual_seed(7)
        x = torch.nn.Parameter(torch.zeros(1, 100))
        optimizer = pto.TopQGradientOptimizer([x], q=0.5, dq=0.4, lr=0.0, generator=generator)
        kept = []
        for _ in range(4):
            x.grad = torch.arange(1.0, 101.0).reshape(1, 100)
            optimizer.step()
            kept.append(int((x.grad != 0).sum()))
        counts.append(kept)
    assert counts[0] == counts[1] and len(set(counts[0])) > 1


@pytest.mark.parametrize("name", FACTORIES)
def test_every_public_transform_factory_builds_and_instantiates(name):
    factory = getattr(ptx, name)
    if name == "chain":
        config = hz.builds(factory, hz.builds(ptx.normalize), hz.builds(ptx.sgd, lr=0.1))
    else:
        config = hz.builds(factory, populate_full_signature=True, **_required(name))
    tx = hz.instantiate(config)
    assert isinstance(tx, ptx.GradientTransformation)
    params = {"w": torch.ones(3, 2)}
    tx.update({"w": torch.ones(3, 2)}, tx.init(params), params)


@pytest.mark.parametrize("name", [n for n in FACTORIES if REQUIRED.get(n)])
def test_a_factory_missing_a_required_setting_fails_as_hydra_does(name):
    config = hz.builds(getattr(ptx, name), populate_full_signature=True)
    with pytest.raises(Exception, match="Missing mandatory value"):
        hz.instantiate(config)


def argmax(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(x.argmax(-1), x.shape[-1]).float()


def test_the_perturbed_optimizers_build_with_a_solver():
    loss = hz.instantiate(hz.builds(ptx.FenchelYoungLoss, func=hz.just(argmax), populate_full_signature=True, seed=0))
    assert isinstance(loss, ptx.FenchelYoungLoss)
    soft = hz.instantiate(hz.builds(ptx.perturbed, func=hz.just(argmax), populate_full_signature=True, seed=0, sigma=0.5))
    assert soft(torch.zeros(2, 3)).shape == (2, 3)
