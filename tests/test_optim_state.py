"""Checkpoint and resume: ``state_dict()`` / ``load_state_dict()`` carry everything a run needs.

For every class, a run saved at step 5 (through ``torch.save`` / ``torch.load``,
which loads with ``weights_only=True``) and resumed in a new optimizer over new
parameter tensors equals, bit for bit, an uninterrupted run at step 10 --
including the inner optimizers' moments, Frank-Wolfe's per-parameter step
counts and the position of the top-q ``dq`` random stream.
"""

from __future__ import annotations

import io
from functools import partial

import pytest
import torch

import paramtx as ptx
import paramtx.optim as pto
from paramtx.optim.misc import DQ_STREAM
from ptx_testing import DEVICE


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


SGD_M = dict(InnerOpt=torch.optim.SGD, lr=0.05, momentum=0.9)
ADAM = dict(InnerOpt=torch.optim.Adam, lr=0.02)

# name -> (build(groups, generator), overrides of the second parameter group)
BUILDERS = {
    "ParamTransformingOptimizer": (lambda g, gen: pto.ParamTransformingOptimizer(g, **ADAM), {"grad_scale": 2.0}),
    "ChainedParamTransformingOptimizer (top-q dq>0)": (
        lambda g, gen: pto.ChainedParamTransformingOptimizer(
            partial(pto.TopQGradientOptimizer, q=0.5, dq=0.4, generator=gen),
            partial(pto.ClampedGradientOptimizer, clamp_max=0.5),
            params=g,
            **SGD_M,
        ),
        {"q": 0.2, "param_ndim": None},
    ),
    "ClampedGradientOptimizer": (
        lambda g, gen: pto.ClampedGradientOptimizer(g, clamp_min=-0.3, clamp_max=0.3, **SGD_M),
        {"clamp_min": None},
    ),
    "ClampedParameterOptimizer": (
        lambda g, gen: pto.ClampedParameterOptimizer(g, clamp_min=-0.5, clamp_max=0.5, **ADAM),
        {"clamp_max": 0.1},
    ),
    "TopQGradientOptimizer (dq=0)": (lambda g, gen: pto.TopQGradientOptimizer(g, q=0.5, **ADAM), {"q": 0.8}),
    "TopQGradientOptimizer (dq>0)": (
        lambda g, gen: pto.TopQGradientOptimizer(g, q=0.5, dq=0.5, generator=gen, **ADAM),
        {"dq": 0.2, "param_ndim": 1},
    ),
    "SignedGradientOptim": (lambda g, gen: pto.SignedGradientOptim(g, **SGD_M), {"lr": 0.01}),
    "L1NormedGradientOptim": (lambda g, gen: pto.L1NormedGradientOptim(g, **ADAM), {"param_ndim": 0}),
    "L2NormedGradientOptim": (lambda g, gen: pto.L2NormedGradientOptim(g, **SGD_M), {"param_ndim": None}),
    "L1qNormedGradientOptim (dq>0)": (
        lambda g, gen: pto.L1qNormedGradientOptim(g, q=0.5, dq=0.3, generator=gen, **ADAM),
        {"q": 0.7},
    ),
    "L2ProjectedOptim": (lambda g, gen: pto.L2ProjectedOptim(g, epsilon=1.0, **ADAM), {"epsilon": 0.3}),
    "LinfProjectedOptim": (lambda g, gen: pto.LinfProjectedOptim(g, epsilon=0.4, **SGD_M), {"epsilon": 0.2}),
    "FrankWolfe": (lambda g, gen: pto.FrankWolfe(g, lmo_scaling_factor=0.5), {"lr": 0.5}),
    "L1FrankWolfe": (lambda g, gen: pto.L1FrankWolfe(g, epsilon=1.0), {"lr": 1.0}),
    "L1qFrankWolfe (dq>0)": (
        lambda g, gen: pto.L1qFrankWolfe(g, q=0.5, dq=0.4, epsilon=1.0, generator=gen),
        {"lmo_scaling_factor": 2.0},
    ),
    "L2FrankWolfe": (lambda g, gen: pto.L2FrankWolfe(g, epsilon=1.0), {"param_ndim": None}),
    "LinfFrankWolfe": (lambda g, gen: pto.LinfFrankWolfe(g, epsilon=0.5, lr=0.5, use_default_lr_schedule=False), {}),
    "GradientTransformationOptimizer (no inner, top-q dq>0 + momentum)": (
        lambda g, gen: pto.GradientTransformationOptimizer(
            g, ptx.chain(ptx.top_q(q=0.5, dq=0.4, seed=3), ptx.sgd(lr=0.05, momentum=0.9))
        ),
        {},
    ),
    "GradientTransformationOptimizer (Adam inner, projection)": (
        lambda g, gen: pto.GradientTransformationOptimizer(
            g, ptx.normalize(p=2), projection=partial(ptx.project_l2_ball, epsilon=1.0), **ADAM
        ),
        {"lr": 0.1},
    ),
    "GradientTransformationOptimizer (no inner, Frank-Wolfe)": (
        lambda g, gen: pto.GradientTransformationOptimizer(g, ptx.chain(ptx.lmo_l1q(q=0.5), ptx.frank_wolfe(1.0))),
        {},
    ),
}

_SHAPES = [(4, 3, 5), (6, 2)]


def _problem():
    generator = _gen(11)
    start = [torch.randn(s, generator=generator, device="cpu").to(DEVICE) for s in _SHAPES]
    slopes = [torch.rand(s, generator=generator, device="cpu").to(DEVICE) + 0.5 for s in _SHAPES]
    offsets = [torch.randn(s, generator=generator, device="cpu").to(DEVICE) for s in _SHAPES]
    return start, slopes, offsets


def _groups(name, values):
    params = [v.clone().requires_grad_(True) for v in values]
    return params, [{"params": [params[0]]}, {"params": [params[1]], **BUILDERS[name][1]}]


def _run(optimizer, params, slopes, offsets, steps):
    for _ in range(steps):
        for p, a, b in zip(params, slopes, offsets):
            p.grad = a * p.detach() + b
        optimizer.step()


def _through_bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer)  # weights_only=True: plain containers, tensors and numbers only


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_resumed_run_equals_uninterrupted_run(name):
    build = BUILDERS[name][0]
    start, slopes, offsets = _problem()

    params, groups = _groups(name, start)
    uninterrupted = build(groups, _gen(0))
    _run(uninterrupted, params, slopes, offsets, 10)

    first_params, groups = _groups(name, start)
    first = build(groups, _gen(0))
    _run(first, first_params, slopes, offsets, 5)
    checkpoint = _through_bytes(
        {"optimizer": first.state_dict(), "params": [p.detach() for p in first_params]}
    )
    del first

    resumed_params, groups = _groups(name, checkpoint["params"])
    resumed = build(groups, _gen(12345))  # another generator: the dq stream comes from the state
    resumed.load_state_dict(checkpoint["optimizer"])
    _run(resumed, resumed_params, slopes, offsets, 5)

    for p, q in zip(params, resumed_params):
        assert torch.equal(p.detach(), q.detach())
        assert torch.equal(p.grad, q.grad)


def test_frank_wolfe_step_counts_are_in_the_state_dict():
    x = torch.zeros(3, 4, requires_grad=True)
    optimizer = pto.L2FrankWolfe([x], epsilon=1.0)
    for _ in range(3):
        x.grad = torch.ones(3, 4)
        optimizer.step()
    assert optimizer.state_dict()["state"][0] == {"step": 3}
    assert optimizer.inner_opt.state[x] == {"step": 3}


def test_dq_stream_position_is_in_the_state_dict_and_advances_per_draw():
    x, y = torch.zeros(2, 8, requires_grad=True), torch.zeros(5, requires_grad=True)
    optimizer = pto.TopQGradientOptimizer([x, y], q=0.5, dq=0.5, generator=_gen(1), lr=0.1)
    assert DQ_STREAM not in optimizer.state  # drawn lazily: a dq=0 run never touches the generator
    for _ in range(3):
        x.grad, y.grad = torch.randn(2, 8), torch.randn(5)
        optimizer.step()
    stream = optimizer.state_dict()["state"][DQ_STREAM]
    assert stream["count"] == 6  # one draw per parameter per step
    # tensors, so that a compiled transform pass does not recompile as the count grows
    assert stream["seed"].dtype == stream["count"].dtype == torch.int64


def test_dq_draws_vary_and_the_same_generator_seed_repeats_them():
    def kept_counts(seed):
        x = torch.zeros(1, 100, requires_grad=True)
        optimizer = pto.TopQGradientOptimizer([x], q=0.5, dq=0.4, generator=_gen(seed), lr=0.0)
        counts = []
        for _ in range(8):
            x.grad = torch.randn(1, 100, generator=_gen(7), device="cpu").to(DEVICE) + 10.0  # no zeros
            optimizer.step()
            counts.append(int((x.grad != 0).sum()))
        return counts

    counts = kept_counts(0)
    assert len(set(counts)) > 1 and all(10 <= c <= 90 for c in counts)
    assert kept_counts(0) == counts


def test_dq_zero_gives_rai_toolbox_values_and_uses_no_random_numbers():
    before = torch.random.get_rng_state()
    x = torch.zeros(2, 4, requires_grad=True)
    optimizer = pto.TopQGradientOptimizer([x], q=0.5, lr=1.0)
    x.grad = torch.tensor([[4.0, -3.0, 2.0, 1.0], [0.0, 0.5, -0.25, 1.0]])
    optimizer.step()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(x.grad, torch.tensor([[4.0, -3.0, 0.0, 0.0], [0.0, 0.5, 0.0, 1.0]]))
