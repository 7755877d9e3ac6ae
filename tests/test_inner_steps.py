"""``sgd`` and ``adam`` are numerically ``torch.optim.SGD`` and ``torch.optim.Adam``.

20 steps on several tensors (a scalar among them) with random gradients, some
of them ``None`` (torch skips those parameters: no step, no state change).
Compared with ``assert_close``'s default float32/float64 tolerances: both sides
do the same float operations, up to the order of a fused multiply-add
(``addcdiv_``/``add_(alpha=)``) versus separate products, i.e. an ulp per step.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import paramtx as ptx
from ptx_testing import randn

SHAPES = [(3, 4), (5,), (), (2, 2, 2)]
STEPS = 20
# (step, leaf) pairs without a gradient; leaf 3 has none on the first two steps,
# so its state is created late, as torch creates it at its first gradient.
NO_GRAD = {(3, 1), (7, 1), (0, 3), (1, 3), (12, 2)}


def _compare(make_torch, tx, dtype, needs_params=True):
    torch_params = [randn(shape, dtype, seed=i, scale=0.5) for i, shape in enumerate(SHAPES)]
    params = [p.clone() for p in torch_params]
    optimizer = make_torch(torch_params)
    state = tx.init(params)
    for step in range(STEPS):
        grads = [
            None if (step, i) in NO_GRAD else randn(shape, dtype, seed=1000 + 10 * step + i)
            for i, shape in enumerate(SHAPES)
        ]
        for p, g in zip(torch_params, grads):
            p.grad = None if g is None else g.clone()
        optimizer.step()
        updates, state = tx.update(grads, state, params)
        params = ptx.apply_updates(params, updates)
        for i, (mine, reference) in enumerate(zip(params, torch_params)):
            assert mine.dtype == dtype
            torch.testing.assert_close(mine, reference, msg=lambda m: f"step {step}, leaf {i}: {m}")
    return params


SGD_SETTINGS = [
    dict(momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
    for momentum, dampening, weight_decay, nesterov in itertools.product(
        [0.0, 0.9], [0.0, 0.3], [0.0, 0.01], [False, True]
    )
    if not (nesterov and (momentum == 0 or dampening != 0))
]


@pytest.mark.parametrize("settings", SGD_SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_sgd_equals_torch_optim_sgd_over_20_steps(settings, dtype):
    _compare(lambda ps: torch.optim.SGD(ps, lr=0.05, **settings), ptx.sgd(lr=0.05, **settings), dtype)


ADAM_SETTINGS = [
    dict(betas=betas, eps=eps, weight_decay=weight_decay)
    for betas, eps, weight_decay in itertools.product([(0.9, 0.999), (0.5, 0.9)], [1e-8, 1e-3], [0.0, 0.1])
]


@pytest.mark.parametrize("settings", ADAM_SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_adam_equals_torch_optim_adam_over_20_steps(settings, dtype):
    _compare(lambda ps: torch.optim.Adam(ps, lr=0.05, **settings), ptx.adam(lr=0.05, **settings), dtype)


def test_sgd_with_momentum_leaves_the_buffer_of_a_none_grad_untouched():
    tx = ptx.sgd(lr=0.1, momentum=0.9)
    params = [torch.ones(2), torch.ones(2)]
    _, state = tx.update([torch.ones(2), torch.ones(2)], tx.init(params), params)
    buffer = state.momentum_buffer[1]
    _, state = tx.update([torch.ones(2), None], state, params)
    assert state.momentum_buffer[1] is buffer


def test_adam_counts_steps_per_leaf_skipping_none_grads():
    tx = ptx.adam(lr=0.1)
    params = [torch.ones(2), torch.ones(2)]
    state = tx.init(params)
    for grads in ([torch.ones(2), None], [torch.ones(2), torch.ones(2)], [torch.ones(2), None]):
        _, state = tx.update(grads, state, params)
    assert [c.item() for c in state.count] == [3, 1]


def test_sgd_and_adam_need_params_only_with_weight_decay():
    g = [torch.ones(2)]
    for tx in (ptx.sgd(0.1, momentum=0.9), ptx.adam(0.1)):
        tx.update(g, tx.init(g))  # no params: fine
    for tx in (ptx.sgd(0.1, weight_decay=0.1), ptx.adam(0.1, weight_decay=0.1)):
        with pytest.raises(ValueError, match="needs params"):
            tx.update(g, tx.init(g))
