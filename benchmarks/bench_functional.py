"""paramtx's functional path against torchopt (eager) and optax (``jax.jit``, on the CPU), side by side.

Run: ``python benchmarks/bench_functional.py`` (``--quick``: fewer repeats).
Benchmark-only peers: ``pip install torchopt==0.7.3 graphviz "jax[cpu]" optax``.

1. **Eager functional Adam over W3** (ResNet-18's 62 tensors): ``ptx.adam`` vs
   ``torchopt.adam``, each ``update`` + ``apply_updates`` returning new parameters.
2. **Compiled steps on W1 and W3**: the same step as one compiled function, paramtx
   under ``torch.compile`` (inductor) and optax under ``jax.jit``, for Adam and
   for "L2 normalize + SGD + project onto the L2 ball" per datum (``param_ndim=-1``;
   optax has no per-datum transforms, so the benchmark writes them with ``jnp``), both
   formulated alike: the update, ``apply_updates``, then the projection.
   Two forms: *pure* (new parameters and state each step) and *in place* (paramtx
   writes the new parameters and state into their own memory; optax donates the
   parameter and state buffers to ``jit``).

The eager rows run in this one process, in alternating blocks of steps; the
compiled ones in alternating processes, one library each (their worker threads
spin after their work and would slow the other's next step). Medians in
milliseconds, ratios peer / paramtx (above 1: paramtx is faster). JAX is told to
use as many threads as torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

import optree
import torch

sys.path.insert(0, os.path.dirname(__file__))

LR, EPSILON = 0.1, 1.0


def round_robin(steps: dict[str, Callable[[], object]], repeats: int, warmup: int = 3, block: int = 5) -> dict[str, float]:
    """Median step time (ms) of each contender, timed in alternating blocks of ``block`` steps.

    Blocks rather than single steps, with a pause between them: XLA's and OpenMP's
    worker threads spin for a while after their work, and a step started right after
    the other library's would pay for it.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    if len(steps) == 1:  # a process of its own: nothing to alternate with
        block = repeats
    names, times = list(steps), {name: [] for name in steps}
    for round_ in range(max(1, repeats // block)):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            if len(steps) > 1:
                time.sleep(0.02)
            for _ in range(block):
                start = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def torch_tensors(shapes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=generator) * 0.05 for s in shapes], [torch.randn(s, generator=generator) for s in shapes]


# ----------------------------------------------------------------------------- paramtx


def paramtx_tx(name: str):
    """The transform, and what follows ``apply_updates`` (the formulation optax's step uses)."""
    import paramtx as ptx

    if name == "Adam":
        return ptx.adam(1e-3), None
    return ptx.chain(ptx.normalize(2), ptx.sgd(LR)), lambda params: ptx.project_l2_ball(params, EPSILON)


def paramtx_eager(name, params, grads):
    import paramtx as ptx

    tx, after = paramtx_tx(name)
    state = [tx.init(params)]

    def step():
        updates, state[0] = tx.update(grads, state[0], params)
        new = ptx.apply_updates(params, updates)
        return new if after is None else after(new)

    return step


def paramtx_compiled(name, params, grads, in_place):
    import paramtx as ptx

    tx, after = paramtx_tx(name)
    live = [p.clone() for p in params]
    state = [tx.init(live)]

    def pure(params, grads, state):
        updates, state = tx.update(grads, state, params)
        new = ptx.apply_updates(params, updates)
        return (new if after is None else after(new)), state

    def inplace(params, grads, state):
        # parameters and state written into their own memory, as optax's donated buffers are
        new, new_state = pure(params, grads, state)
        torch._foreach_copy_(params, new)
        old_leaves, new_leaves = optree.tree_leaves(state), optree.tree_leaves(new_state)
        if old_leaves:
            torch._foreach_copy_(old_leaves, new_leaves)
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


CASES = [(name, in_place) for name in ("L2 normalize+project", "Adam") for in_place in (False, True)]


def child(library: str, workload: str, repeats: int) -> None:
    """Time every compiled case of ``workload`` with one library; print one JSON dict."""
    from workloads import WORKLOADS

    params, grads = torch_tensors(WORKLOADS[workload])
    out = {}
    for name, in_place in CASES:
        torch._dynamo.reset()
        if library == "paramtx":
            step = paramtx_compiled(name, params, grads, in_place)
        else:
            step = optax_step(name, params, grads, donate=in_place)
        out[f"{name}|{in_place}"] = round_robin({library: step}, repeats)[library]
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workloads", default="W1,W3", help="of the compiled comparison")
    parser.add_argument("--rounds", type=int, default=3, help="processes per library, alternating")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}")
    repeats = 10 if args.quick else 40
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    from workloads import WORKLOADS

    print("# paramtx functional path vs torchopt 0.7.3 (eager) and optax (jax.jit, CPU)")
    print(f"# torch {torch.__version__}, {platform.machine()}, {threads} threads; medians (ms)")
    print()
    params, grads = torch_tensors(WORKLOADS["W3"])
    ms = round_robin({"paramtx": paramtx_eager("Adam", params, grads), "torchopt": torchopt_eager(params, grads)}, repeats)
    print("| workload | step | paramtx (eager) | torchopt (eager) | torchopt / paramtx |")
    print("|---|---|---:|---:|---:|")
    print(f"| W3 | Adam | {ms['paramtx']:.2f} | {ms['torchopt']:.2f} | {ms['torchopt'] / ms['paramtx']:.2f}x |", flush=True)
    print()
    # Compiled: each library in processes of its own (their worker threads would disturb
    # each other's), alternating, the median over processes of each one's median.
    print(f"(compiled: {args.rounds} alternating processes per library, {repeats} steps each)")
    print()
    print("| workload | step | form | paramtx (torch.compile) | optax (jax.jit) | optax / paramtx |")
    print("|---|---|---|---:|---:|---:|")
    for workload in args.workloads.split(","):
        runs: dict[str, list[dict]] = {"paramtx": [], "optax": []}
        for round_ in range(args.rounds):
            for library in (["paramtx", "optax"] if round_ % 2 == 0 else ["optax", "paramtx"]):
                result = subprocess.run(
                    [sys.executable, __file__, "--child", library, workload, str(repeats)]
                    + (["--threads", str(args.threads)] if args.threads else []),
                    check=True, capture_output=True, text=True,
                )
                runs[library].append(json.loads(result.stdout.strip().splitlines()[-1]))
        for name, in_place in CASES:
            key = f"{name}|{in_place}"
            ours = statistics.median(run[key] for run in runs["paramtx"])
            theirs = statistics.median(run[key] for run in runs["optax"])
            form = "in place / donated" if in_place else "pure"
            print(f"| {workload} | {name} | {form} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
