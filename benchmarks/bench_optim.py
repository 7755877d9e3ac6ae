"""paramtx.optim shims vs their rai-toolbox 0.2.1 twins vs paramtx's functional path.

Run: ``python benchmarks/bench_optim.py`` (add ``--quick`` for fewer repeats).

Every row is one optimizer step on a workload of ``workloads.py`` (W1: 256
perturbations of shape (3, 32, 32), param_ndim=-1; W2: 64 of shape
(3, 224, 224); W3: ResNet-18's 62 parameter tensors):

* shim: ``paramtx.optim.<Class>.step()`` with the gradients already in ``.grad``;
* rai-toolbox: the same class of ``rai_toolbox.optim``, same settings;
* functional: ``tx.update`` + ``apply_updates`` (+ the projection) with the
  transforms doing the same maths (the faster of the two formulations of a
  projected step: ``projected(...)`` in the chain, or projecting after
  ``apply_updates``).

The three are timed round-robin (shim, rai, functional, shim, ...) in this one
process, so a load change on the machine hits all three alike; medians in
milliseconds, and the ratios rai / shim (speed-up) and shim / functional
(the shim's overhead). A second table times every class of the 16 on W1
against its twin.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from functools import partial
from typing import Callable

import torch

sys.path.insert(0, os.path.dirname(__file__))

import paramtx as ptx  # noqa: E402
import paramtx.optim as pto  # noqa: E402
from workloads import WORKLOADS, functional_step, make_tensors, optimizer_step  # noqa: E402

import rai_toolbox.optim as rai  # noqa: E402

LR, EPSILON, Q = 0.1, 1.0, 0.9


def round_robin_medians(steps: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median wall time (ms) of each step, timed in turn within each round.

    Each round starts with the next step in turn, so that no step always runs
    right after the one that evicts the caches the most.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def l2_functional(params, grads):
    """Both formulations of the projected L2 step."""
    return {
        "projected in chain": functional_step(
            ptx.chain(ptx.normalize(2), ptx.sgd(LR), ptx.projected(ptx.project_l2_ball, epsilon=EPSILON)), params, grads
        ),
        "project after apply": functional_step(
            ptx.chain(ptx.normalize(2), ptx.sgd(LR)), params, grads, partial(ptx.project_l2_ball, epsilon=EPSILON)
        ),
    }


# (workload, transform, class name, constructor kwargs, functional steps factory)
MAIN_CASES = [
    ("W1", "L2 normalize+project", "L2ProjectedOptim", dict(lr=LR, epsilon=EPSILON), l2_functional),
    ("W1", "top-q q=0.9", "TopQGradientOptimizer", dict(q=Q, lr=LR),
     lambda p, g: {"": functional_step(ptx.chain(ptx.top_q(Q), ptx.sgd(LR)), p, g)}),
    ("W1", "L1q Frank-Wolfe q=0.9", "L1qFrankWolfe", dict(q=Q, epsilon=EPSILON),
     lambda p, g: {"": functional_step(ptx.chain(ptx.lmo_l1q(Q), ptx.frank_wolfe(EPSILON)), p, g)}),
    ("W2", "top-q q=0.9", "TopQGradientOptimizer", dict(q=Q, lr=LR),
     lambda p, g: {"": functional_step(ptx.chain(ptx.top_q(Q), ptx.sgd(LR)), p, g)}),
    ("W3", "L2 normalize+project", "L2ProjectedOptim", dict(lr=LR, epsilon=EPSILON), l2_functional),
    ("W3", "sign", "SignedGradientOptim", dict(lr=LR),
     lambda p, g: {"": functional_step(ptx.chain(ptx.sign(), ptx.sgd(LR)), p, g)}),
]


def every_class(lib):
    """Constructors of the 16 classes with W1 settings (param_ndim=-1 where it applies)."""
    chain = lambda ps: lib.ChainedParamTransformingOptimizer(  # noqa: E731
        partial(lib.TopQGradientOptimizer, q=Q), partial(lib.ClampedGradientOptimizer, clamp_max=0.5),
        params=ps, lr=LR,
    )
    return {
        "ParamTransformingOptimizer": lambda ps: lib.ParamTransformingOptimizer(ps, lr=LR),
        "ChainedParamTransformingOptimizer (top-q, clamp)": chain,
        "ClampedGradientOptimizer": lambda ps: lib.ClampedGradientOptimizer(ps, clamp_min=-0.1, clamp_max=0.1, lr=LR),
        "ClampedParameterOptimizer": lambda ps: lib.ClampedParameterOptimizer(ps, clamp_min=-1.0, clamp_max=1.0, lr=LR),
        "TopQGradientOptimizer": lambda ps: lib.TopQGradientOptimizer(ps, q=Q, lr=LR),
        "SignedGradientOptim": lambda ps: lib.SignedGradientOptim(ps, lr=LR),
        "L1NormedGradientOptim": lambda ps: lib.L1NormedGradientOptim(ps, lr=LR),
        "L2NormedGradientOptim": lambda ps: lib.L2NormedGradientOptim(ps, lr=LR),
        "L1qNormedGradientOptim": lambda ps: lib.L1qNormedGradientOptim(ps, q=Q, lr=LR),
        "L2ProjectedOptim": lambda ps: lib.L2ProjectedOptim(ps, epsilon=EPSILON, lr=LR),
        "LinfProjectedOptim": lambda ps: lib.LinfProjectedOptim(ps, epsilon=0.03, lr=LR),
        "FrankWolfe": lambda ps: lib.FrankWolfe(ps, lmo_scaling_factor=EPSILON),
        "L1FrankWolfe": lambda ps: lib.L1FrankWolfe(ps, epsilon=EPSILON),
        "L1qFrankWolfe": lambda ps: lib.L1qFrankWolfe(ps, q=Q, epsilon=EPSILON),
        "L2FrankWolfe": lambda ps: lib.L2FrankWolfe(ps, epsilon=EPSILON),
        "LinfFrankWolfe": lambda ps: lib.LinfFrankWolfe(ps, epsilon=0.03),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    repeats = 7 if args.quick else 31
    data = {name: make_tensors(shapes) for name, shapes in WORKLOADS.items()}

    print("# paramtx.optim shims vs rai-toolbox 0.2.1 vs paramtx's functional path")
    print(
        f"# torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads; "
        f"round-robin medians of {repeats} steps (ms)"
    )
    print()
    print("| workload | transform | class | shim | rai-toolbox | functional | rai / shim | shim / functional |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    checks = []
    for workload, transform, cls, kwargs, functional in MAIN_CASES:
        params, grads = data[workload]
        steps = {
            "shim": optimizer_step(lambda ps: getattr(pto, cls)(ps, **kwargs), params, grads),
            "rai": optimizer_step(lambda ps: getattr(rai, cls)(ps, **kwargs), params, grads),
        }
        functional_steps = functional(params, grads)
        steps.update({f"functional {name}": step for name, step in functional_steps.items()})
        ms = round_robin_medians(steps, repeats=repeats if workload != "W2" else max(5, repeats // 3))
        best = min((value, name) for name, value in ms.items() if name.startswith("functional"))
        label = f" ({best[1].removeprefix('functional ')})" if len(functional_steps) > 1 else ""
        speedup, overhead = ms["rai"] / ms["shim"], ms["shim"] / best[0]
        print(
            f"| {workload} | {transform} | {cls} | {ms['shim']:.2f} | {ms['rai']:.2f} | {best[0]:.2f}{label} "
            f"| {speedup:.2f}x | {overhead:.2f}x |",
            flush=True,
        )
        checks.append((f"{workload} {cls}: shim at least as fast as rai-toolbox", speedup >= 1.0))
        checks.append((f"{workload} {cls}: shim overhead over the functional path <= 10%", overhead <= 1.10))
        if workload == "W1" and cls in ("TopQGradientOptimizer", "L1qFrankWolfe"):
            checks.append((f"W1 {cls}: >= 3x faster than rai-toolbox", speedup >= 3.0))

    print()
    print("| W1: class | shim | rai-toolbox | rai / shim |")
    print("|---|---:|---:|---:|")
    params, grads = data["W1"]
    ours, theirs = every_class(pto), every_class(rai)
    for name in ours:
        steps = {"shim": optimizer_step(ours[name], params, grads)}
        try:
            steps["rai"] = optimizer_step(theirs[name], params, grads)
            steps["rai"]()
        except IndexError:  # rai-toolbox's L1FrankWolfe fails on data with more than one dim
            del steps["rai"]
            ms = round_robin_medians(steps, repeats=repeats)
            print(f"| {name} | {ms['shim']:.2f} | fails (IndexError) | - |", flush=True)
            continue
        ms = round_robin_medians(steps, repeats=repeats)
        print(f"| {name} | {ms['shim']:.2f} | {ms['rai']:.2f} | {ms['rai'] / ms['shim']:.2f}x |", flush=True)
        checks.append((f"W1 {name}: shim at least as fast as rai-toolbox", ms["rai"] >= ms["shim"]))

    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")


if __name__ == "__main__":
    main()
