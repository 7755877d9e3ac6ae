"""A state machine over the shims: random class, settings, shapes, dtypes and ``param_ndim``,
then a random sequence of what training does to an optimizer.

Rules: ``step`` (random finite gradients), ``zero_grad``, ``add_param_group``,
``state_dict``/``load_state_dict`` into a rebuilt optimizer, ``deepcopy``, and an
LR scheduler's step. After every rule: no exception for valid input, finite
parameters, the constraint set held (balls, boxes, Frank-Wolfe's ball), and a
resumed or copied optimizer stepping exactly as the original.
"""

from __future__ import annotations

import copy
import warnings

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import paramtx as ptx
from ptx_testing import DEVICE, cpu_generator
from shims_registry import SHIMS, ShimEntry, starting_point

SHAPES = [(6,), (4, 3), (2, 3, 2)]


class ShimMachine(RuleBasedStateMachine):
    entry: ShimEntry

    @initialize(
        entry=st.sampled_from(SHIMS),
        dtype=st.sampled_from([torch.float32, torch.float64]),
        shape=st.sampled_from(SHAPES),
        param_ndim=st.sampled_from([-1, None, 1]),
        seed=st.integers(0, 2**16),
    )
    def build(self, entry, dtype, shape, param_ndim, seed):
        self.entry, self.dtype, self.param_ndim, self.seed = entry, dtype, param_ndim, seed
        self.groups = [self._params(shape, seed)]  # the parameters of each group, in order
        self.optimizer = self._construct(self.groups[0])
        for params in self.groups[1:]:
            self.optimizer.add_param_group({"params": params})
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=0.8)
        self.draws = 0

    # -- building ----------------------------------------------------------------------

    def _params(self, shape, seed):
        return [torch.nn.Parameter(starting_point(self.entry, shape, self.dtype, seed=seed).to(DEVICE))]

    def _construct(self, params):
        kwargs = {"param_ndim": self.param_ndim} if self.entry.takes_param_ndim else {}
        if self.entry.inner_kwargs:
            kwargs["lr"] = 0.1
        return self.entry.build(params, **kwargs)

    def _grads(self):
        self.draws += 1
        generator = cpu_generator(self.seed * 1000 + self.draws)
        return [torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p) for group in self.groups for p in group]

    def _set(self, optimizer, grads):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for param, grad in zip(params, grads):
            param.grad = grad.clone()

    # -- rules ---------------------------------------------------------------------------

    @rule()
    def step(self):
        self._set(self.optimizer, self._grads())
        self.optimizer.step()

    @rule()
    def zero_grad(self):
        self.optimizer.zero_grad()

    @precondition(lambda self: len(self.groups) < 3)
    @rule(shape=st.sampled_from(SHAPES), seed=st.integers(0, 2**16))
    def add_param_group(self, shape, seed):
        params = self._params(shape, seed)
        self.optimizer.add_param_group({"params": params})
        self.groups.append(params)

    @rule()
    def scheduler_step(self):
        # A schedule stepped before any optimizer step is an order this machine explores on
        # purpose; torch warns about it, which is noise here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            self.scheduler.step()

    @rule()
    def resume_from_the_state_dict(self):
        saved = copy.deepcopy(self.optimizer.state_dict())
        twin_groups = [[torch.nn.Parameter(p.detach().clone()) for p in group] for group in self.groups]
        twin = self._construct(twin_groups[0])
        for params in twin_groups[1:]:
            twin.add_param_group({"params": params})
        twin.load_state_dict(saved)
        self._step_both_and_compare(twin, "resumed")

    @rule()
    def deepcopy(self):
        self._step_both_and_compare(copy.deepcopy(self.optimizer), "deep copy")

    def _step_both_and_compare(self, twin, how):
        grads = self._grads()
        for optimizer in (self.optimizer, twin):
            self._set(optimizer, grads)
            optimizer.step()
        mine = [p for g in self.optimizer.param_groups for p in g["params"]]
        theirs = [p for g in twin.param_groups for p in g["params"]]
        for a, b in zip(mine, theirs):
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=f"{self.entry.name}: the {how} optimizer diverged")

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def finite_and_in_the_set(self):
        if not hasattr(self, "optimizer"):
            return
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                assert bool(torch.isfinite(param).all()), f"{self.entry.name}: a finite gradient gave a non-finite step"
                if self.entry.in_set is not None:
                    batch = ptx.to_batch(param.detach().contiguous(), group.get("param_ndim", None))
                    slack = 4 * torch.finfo(param.dtype).eps
                    assert self.entry.in_set(batch, group, slack), f"{self.entry.name}: a parameter left its set"


ShimMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=10, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestShimStateMachine = ShimMachine.TestCase
