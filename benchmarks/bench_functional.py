"""paramtx's functional path against torchopt (eager) and optax (``jax.jit``, on the CPU), side by side.

Run: ``python benchmarks/bench_functional.py`` (``--quick``: fewer repeats).
Benchmark-only peers: ``pip install torchopt==0.7.3 graphviz "jax[cpu]" optax``.

1. **Eager functional Adam over W3** (ResNet-18's 62 tensors): ``ptx.adam`` vs
   ``torchopt.adam``, each ``update`` + ``apply_updates`` returning new parameters.
2. **Compiled steps on W1 and W3**: the same step as one compiled function, paramtx
   under ``torch.compile`` (inductor) and optax under ``jax.jit``, for Adam and
   for "L2 normalize + SGD + project onto the L2 ball" per datum (``param_ndim=-1``;
   optax has no per-datum transforms, so the benchmark writes them with ``jnp``).
   Two forms: *pure* (new parameters each step) and *in place* (paramtx writes the
   result into the parameters; optax donates the parameter buffers to ``jit``).

All contenders run in this one process, round-robin; medians in milliseconds,
ratios peer / paramtx (above 1: paramtx is faster). JAX is told to use as many
threads as torch.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch

sys.path.insert(0, os.path.dirname(__file__))

LR, EPSILON = 0.1, 1.0


def round_robin(steps: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[str, float]:
    for step in steps.values():
        for _ in range(warmup):
            step()
    names, times = list(steps), {name: [] for name in steps}
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def torch_tensors(shapes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=generator) * 0.05 for s in shapes], [torch.randn(s, generator=generator) for s in shapes]


# ----------------------------------------------------------------------------- paramtx


def paramtx_tx(name: str):
    import paramtx as ptx

    if name == "Adam":
        return ptx.adam(1e-3)
    return ptx.chain(ptx.normalize(2), ptx.sgd(LR), ptx.projected(ptx.project_l2_ball, epsilon=EPSILON))


def paramtx_eager(name, params, grads):
    import paramtx as ptx

    tx = paramtx_tx(name)
    state = [tx.init(params)]

    def step():
        updates, state[0] = tx.update(grads, state[0], params)
        return ptx.apply_updates(params, updates)

    return step


def paramtx_compiled(name, params, grads, in_place):
    import paramtx as ptx

    tx = paramtx_tx(name)
    live = [p.clone() for p in params]
    state = [tx.init(live)]

    def pure(params, grads, state):
        updates, state = tx.update(grads, state, params)
        return ptx.apply_updates(params, updates), state

    def inplace(params, grads, state):
        new, state = pure(params, grads, state)
        torch._foreach_copy_(params, new)
        return state

    compiled = torch.compile(inplace if in_place else pure)

    def step():
        if in_place:
            state[0] = compiled(live, grads, state[0])
        else:
            _, state[0] = compiled(live, grads, state[0])

    return step


# ----------------------------------------------------------------------------- peers


def torchopt_eager(params, grads):
    import torchopt

    tx = torchopt.adam(1e-3)
    state = [tx.init(params)]

    def step():
        updates, state[0] = tx.update(grads, state[0], params=params, inplace=False)
        return torchopt.apply_updates(params, updates, inplace=False)

    return step


def optax_step(name, params, grads, donate):
    import jax
    import jax.numpy as jnp
    import optax

    jparams = [jnp.asarray(p.numpy()) for p in params]
    jgrads = [jnp.asarray(g.numpy()) for g in grads]

    def per_datum_norm(x):
        return jnp.sqrt(jnp.sum(jnp.square(x.reshape(x.shape[0], -1)), axis=1)).reshape((-1,) + (1,) * (x.ndim - 1)) if x.ndim else jnp.abs(x)

    if name == "Adam":
        tx = optax.adam(1e-3)

        def apply(params, updates):
            return optax.apply_updates(params, updates)
    else:
        normalize = optax.stateless(
            lambda updates, params=None: jax.tree.map(lambda g: g / jnp.maximum(per_datum_norm(g), 1.1754944e-38), updates)
        )
        tx = optax.chain(normalize, optax.sgd(LR))

        def apply(params, updates):
            new = optax.apply_updates(params, updates)
            return jax.tree.map(lambda x: x * jnp.minimum(1.0, EPSILON / per_datum_norm(x)), new)

    def step_fn(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return apply(params, updates), state

    compiled = jax.jit(step_fn, donate_argnums=(0, 1) if donate else ())
    carry = [jparams, tx.init(jparams)]

    def step():
        carry[0], carry[1] = compiled(carry[0], carry[1], jgrads)
        jax.block_until_ready(carry[0])

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}")
    from workloads import WORKLOADS

    repeats = 9 if args.quick else 31
    print("# paramtx functional path vs torchopt 0.7.3 (eager) and optax (jax.jit, CPU)")
    print(f"# torch {torch.__version__}, {platform.machine()}, {threads} threads; round-robin medians (ms)")
    print()
    params, grads = torch_tensors(WORKLOADS["W3"])
    ms = round_robin({"paramtx": paramtx_eager("Adam", params, grads), "torchopt": torchopt_eager(params, grads)}, repeats)
    print("| workload | step | paramtx (eager) | torchopt (eager) | torchopt / paramtx |")
    print("|---|---|---:|---:|---:|")
    print(f"| W3 | Adam | {ms['paramtx']:.2f} | {ms['torchopt']:.2f} | {ms['torchopt'] / ms['paramtx']:.2f}x |", flush=True)
    print()
    print("| workload | step | form | paramtx (torch.compile) | optax (jax.jit) | optax / paramtx |")
    print("|---|---|---|---:|---:|---:|")
    for workload in ("W1", "W3"):
        params, grads = torch_tensors(WORKLOADS[workload])
        for name in ("L2 normalize+project", "Adam"):
            for in_place in (False, True):
                torch._dynamo.reset()
                steps = {
                    "paramtx": paramtx_compiled(name, params, grads, in_place),
                    "optax": optax_step(name, params, grads, donate=in_place),
                }
                ms = round_robin(steps, repeats)
                form = "in place / donated" if in_place else "pure"
                print(
                    f"| {workload} | {name} | {form} | {ms['paramtx']:.2f} | {ms['optax']:.2f} "
                    f"| {ms['optax'] / ms['paramtx']:.2f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
