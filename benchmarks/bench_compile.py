"""Eager vs ``torch.compile``d functional steps, against a bare ``torch.optim.SGD(foreach=True)`` step.

Run: ``python benchmarks/bench_compile.py`` (add ``--quick`` for fewer repeats).

One step is ``tx.update`` + ``apply_updates`` on the workload (W1: 256
perturbations of shape (3, 32, 32) with ``param_ndim=-1``; W3: the 62
parameter tensors of a ResNet-18; see ``workloads.py``), in two forms:

* pure: the step returns new parameters (fresh tensors each step);
* in place: the step ends with ``torch._foreach_copy_(params, new_params)``,
  as a training loop does to its model's parameters; compiled, inductor
  writes the result straight into the parameters' memory.

Each form runs eagerly and under ``torch.compile`` (inductor, default mode);
compile time (the first call) is reported apart and excluded from the
medians. The SGD step is the bare ``torch.optim.SGD(foreach=True)`` step with
the gradients already in ``.grad``: the floor any step is compared with. All
are timed side by side in this one process, round-robin (see
``interleaved_medians``): medians in milliseconds, and the ratios eager /
compiled (speed-up) and compiled / SGD. The last row per workload is the
``L2ProjectedOptim`` shim (in place by nature), eager and with ``compile=True``.

``--threads N`` sets ``torch.set_num_threads``: on a shared machine whose
cores are busy, OpenMP's barriers wait for descheduled threads and every
parallel op costs milliseconds; one thread keeps the figures stable.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import torch

sys.path.insert(0, os.path.dirname(__file__))

import paramtx as ptx  # noqa: E402
from paramtx.optim import L2ProjectedOptim  # noqa: E402
from workloads import WORKLOADS, make_tensors  # noqa: E402

LR, EPSILON = 0.1, 1.0

CHAINS = {
    "L2 normalize+project": lambda: ptx.chain(
        ptx.normalize(2), ptx.sgd(LR), ptx.projected(ptx.project_l2_ball, epsilon=EPSILON)
    ),
    "sign": lambda: ptx.chain(ptx.sign(), ptx.sgd(LR)),
}


def make_steps(tx: ptx.GradientTransformation):
    """The pure step ``(params, grads, state) -> (new params, new state)`` and the
    in-place step ``(params, grads, state) -> new state`` that overwrites ``params``."""

    def pure(params, grads, state):
        updates, state = tx.update(grads, state, params)
        return ptx.apply_updates(params, updates), state

    def in_place(params, grads, state):
        new_params, state = pure(params, grads, state)
        torch._foreach_copy_(params, new_params)
        return state

    return pure, in_place


def with_grads(params, grads) -> list[torch.nn.Parameter]:
    leaves = [torch.nn.Parameter(p.clone()) for p in params]
    for leaf, grad in zip(leaves, grads):
        leaf.grad = grad.clone()
    return leaves


def sgd_step(params, grads):
    return torch.optim.SGD(with_grads(params, grads), lr=LR, foreach=True).step


def interleaved_medians(steps: dict[Any, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[Any, float]:
    """Median wall time (ms) of each step, timed round-robin: one call of each per round.

    On a shared machine the load drifts during a run; interleaving makes every
    step see the same drift, so the ratios hold even when the absolute times move.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[Any, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)")
    args = parser.parse_args()
    repeats = 7 if args.quick else 25
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print("# paramtx functional step: eager vs torch.compile (inductor) vs torch.optim.SGD(foreach=True)")
    print(
        f"# torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads; "
        f"medians of {repeats} interleaved steps (ms); compile: the first call, in seconds"
    )
    print()
    print("| workload | transform | form | eager | compiled | SGD | eager / compiled | compiled / SGD | compile (s) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for workload in ("W1", "W3"):
        params, grads = make_tensors(WORKLOADS[workload])
        steps, compile_s = {"SGD": sgd_step(params, grads)}, {}
        for name, build in CHAINS.items():
            tx = build()
            state = tx.init(params)
            for form, step in zip(("pure", "in place"), make_steps(tx)):
                # the in-place form gets its own copy of the parameters to overwrite
                args = (params if form == "pure" else [p.clone() for p in params], grads, state)
                compiled = torch.compile(step)
                start = time.perf_counter()
                compiled(*args)
                compile_s[name, form] = time.perf_counter() - start
                steps[name, form, "eager"] = functools.partial(step, *args)
                steps[name, form, "compiled"] = functools.partial(compiled, *args)
        # The shim (in place by nature), eager and with compile=True.
        shim = "L2ProjectedOptim (shim)", "in place"
        steps[(*shim, "eager")] = L2ProjectedOptim(with_grads(params, grads), epsilon=EPSILON, lr=LR).step
        compiled_shim = L2ProjectedOptim(with_grads(params, grads), epsilon=EPSILON, lr=LR, compile=True).step
        start = time.perf_counter()
        compiled_shim()
        compile_s[shim] = time.perf_counter() - start
        steps[(*shim, "compiled")] = compiled_shim
        ms = interleaved_medians(steps, repeats)
        for name, form in compile_s:
            eager, compiled = ms[name, form, "eager"], ms[name, form, "compiled"]
            print(
                f"| {workload} | {name} | {form} | {eager:.2f} | {compiled:.2f} | {ms['SGD']:.2f} "
                f"| {eager / compiled:.2f}x | {compiled / ms['SGD']:.2f}x | {compile_s[name, form]:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
