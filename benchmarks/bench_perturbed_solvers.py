"""Ready-made perturbed solvers: forward + backward time against the ways to get them without.

Run: ``python benchmarks/bench_perturbed_solvers.py [--reps 15] [--threads 2]``.

The work: ``y = solver(θ)`` for ``θ`` of shape (B=32, n=100), N=1000 draws,
sigma 0.5, then ``(y * w).sum()`` backward (a fixed ``w``). Rows per solver:

* paramtx's ready-made solver (``perturbed_ranks``, ``perturbed_topk`` with
  k=10, ``perturbed_sort``, default options);
* ``ptx.perturbed`` of the same solver written by hand (``argsort(argsort)``,
  a top-k mask, ``sort``), the generic path (for the sort, a score-function
  gradient instead of the pathwise one);
* for the sort, autograd through every sorted draw (``torch.sort`` of all
  ``N`` perturbed inputs at once: the pathwise gradient too, with memory that
  grows with ``N``);
* optax's ``make_perturbed_fun`` of the same solver under ``jax.jit`` (without
  its baseline, on the CPU, when jax and optax are installed; benchmark-only).

All rows run in one process, in turn, round after round, so a busy machine
slows them alike; the table gives the median over rounds of the wall time and
of the process's CPU time (all threads; it moves less on a shared machine),
and each row's over the ready-made solver's.

``--section error``: the soft sort's Jacobian, the expected permutation
matrix, is exact for Gumbel noise (a Plackett-Luce sum over the n! orders).
The table gives the mean squared error of its estimate, over ``--seeds``
seeds, for ``perturbed_sort``'s pathwise estimate and for the score-function
estimate of ``ptx.perturbed(sort)`` with and without its control variate.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import time
from typing import Callable

import torch

import paramtx as ptx

B, N_LIST, NUM_SAMPLES, SIGMA, K = 32, 100, 1000, 0.5, 10


def _torch_rows(theta: torch.Tensor, w: torch.Tensor) -> dict[str, dict[str, Callable[[], None]]]:
    def run(f: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            t = theta.clone().requires_grad_(True)
            (f(t) * w).sum().backward()
        return step

    def hand_ranks(x):
        return torch.argsort(torch.argsort(x, -1), -1).to(x.dtype)

    def hand_topk(x):
        return torch.zeros_like(x).scatter_(-1, torch.topk(x, K, -1).indices, 1.0)

    def hand_sort(x):
        return torch.sort(x, -1).values

    def every_sorted_draw(t):
        z = torch.randn(t.shape[0], NUM_SAMPLES, t.shape[1], generator=torch.Generator().manual_seed(0))
        return torch.sort(t.unsqueeze(1) + SIGMA * z, -1).values.mean(1)

    options = dict(num_samples=NUM_SAMPLES, sigma=SIGMA, seed=0)
    return {
        "ranks": {
            "ptx.perturbed_ranks": run(lambda t: ptx.perturbed_ranks(t, **options)),
            "ptx.perturbed(argsort(argsort))": run(lambda t: ptx.perturbed(hand_ranks, noise="gumbel", **options)(t)),
        },
        "topk": {
            f"ptx.perturbed_topk(k={K})": run(lambda t: ptx.perturbed_topk(t, K, **options)),
            "ptx.perturbed(top-k mask)": run(lambda t: ptx.perturbed(hand_topk, noise="gumbel", **options)(t)),
        },
        "sort": {
            "ptx.perturbed_sort (pathwise)": run(lambda t: ptx.perturbed_sort(t, **options)),
            "ptx.perturbed(sort) (score function)": run(lambda t: ptx.perturbed(hand_sort, noise="normal", **options)(t)),
            "autograd through every sorted draw": run(every_sorted_draw),
        },
    }


def _optax_rows(theta: torch.Tensor, w: torch.Tensor) -> dict[str, dict[str, Callable[[], None]]]:
    try:
        import jax
        import jax.numpy as jnp
        from optax import perturbations
    except ImportError:
        return {}
    theta_j, w_j = jnp.asarray(theta.numpy()), jnp.asarray(w.numpy())

    def ranks(x):
        return jnp.argsort(jnp.argsort(x, -1), -1).astype(x.dtype)

    def topk(x):
        return (x >= jnp.sort(x, -1)[..., -K:-K + 1]).astype(x.dtype)

    def sort(x):
        return jnp.sort(x, -1)

    rows = {}
    for name, fun, noise in (
        ("ranks", ranks, perturbations.Gumbel()),
        ("topk", topk, perturbations.Gumbel()),
        ("sort", sort, perturbations.Normal()),
    ):
        smooth = perturbations.make_perturbed_fun(fun, NUM_SAMPLES, SIGMA, noise, use_baseline=False)
        step = jax.jit(jax.grad(lambda t, key, s=smooth: jnp.sum(s(key, t) * w_j)))
        key = jax.random.PRNGKey(0)
        step(theta_j, key).block_until_ready()  # compile once
        rows[name] = {"optax make_perturbed_fun, jit": lambda s=step, k=key: s(theta_j, k).block_until_ready()}
    return rows


def expected_permutation(theta: torch.Tensor, sigma: float) -> torch.Tensor:
    """``E[P(θ + σG)]`` (n, n) of one list, exactly: the Plackett-Luce law of the order, weights ``exp(θ/σ)``."""
    n, logits = theta.shape[-1], theta.double() / sigma
    total = torch.zeros(n, n, dtype=torch.float64)
    for perm in itertools.permutations(range(n)):  # perm: largest first
        ordered = logits[list(perm)]
        p = torch.exp(sum(ordered[j] - torch.logsumexp(ordered[j:], 0) for j in range(n)))
        total[torch.arange(n), torch.tensor(perm[::-1])] += p  # ascending position i holds perm[n - 1 - i]
    return total


def error_table(seeds: int) -> None:
    """Mean squared error of the soft sort's Jacobian estimates against the exact ``E[P]``."""
    from torch.func import jacrev

    def sort(x):
        return torch.sort(x, -1).values

    def pathwise(sigma, num_samples, seed):
        return lambda t: ptx.perturbed_sort(t, num_samples=num_samples, sigma=sigma, noise="gumbel", seed=seed)

    def score(control_variate):
        def make(sigma, num_samples, seed):
            return ptx.perturbed(sort, num_samples=num_samples, sigma=sigma, noise="gumbel", seed=seed,
                                 control_variate=control_variate)
        return make

    estimators = {"pathwise": pathwise, "control variate": score(True), "plain": score(False)}
    print(f"Soft sort Jacobian, mean squared error over {seeds} seeds (Gumbel noise, exact E[P] by enumeration)\n")
    print("| n | sigma | N | perturbed_sort (pathwise) | perturbed(sort), control variate | perturbed(sort), plain |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, sigma, num_samples in [(4, 0.5, 1000), (5, 0.1, 1000), (5, 0.5, 10_000)]:
        theta = torch.randn(1, n, generator=torch.Generator().manual_seed(n))
        exact = expected_permutation(theta[0], sigma)
        errors = {}
        for name, make in estimators.items():
            mse = []
            for seed in range(seeds):
                jac = jacrev(make(sigma, num_samples, seed))(theta)  # (1, n, 1, n)
                mse.append(((jac[0, :, 0].double() - exact) ** 2).mean().item())
            errors[name] = statistics.mean(mse)
        base = errors["pathwise"]
        print(f"| {n} | {sigma} | {num_samples} | {base:.2e} | {errors['control variate']:.2e} "
              f"({errors['control variate'] / base:.0f}x) | {errors['plain']:.2e} ({errors['plain'] / base:.0f}x) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=["speed", "error", "all"], default="all")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.section in ("error", "all"):
        error_table(args.seeds)
        print()
    if args.section == "error":
        return
    os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'}")

    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(B, N_LIST, generator=generator)
    w = torch.randn(B, N_LIST, generator=generator)
    groups = _torch_rows(theta, w)
    for name, rows in _optax_rows(theta, w).items():
        groups[name].update(rows)

    steps = [(group, label, step) for group, rows in groups.items() for label, step in rows.items()]
    for _, _, step in steps:  # warm up
        step()
    times: dict[tuple[str, str], list[float]] = {(group, label): [] for group, label, _ in steps}
    cpu_times: dict[tuple[str, str], list[float]] = {(group, label): [] for group, label, _ in steps}
    for _ in range(args.reps):  # round-robin: a busy machine slows every row alike
        for group, label, step in steps:
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            times[group, label].append(time.perf_counter() - start)
            cpu_times[group, label].append(time.process_time() - start_cpu)

    print(f"B={B}, n={N_LIST}, N={NUM_SAMPLES}, sigma={SIGMA}, forward + backward; torch {torch.__version__}, "
          f"{args.threads} thread(s), {platform.processor() or platform.machine()}, median of {args.reps} rounds\n")
    # CPU time (all of the process's threads) moves less than wall time on a shared machine.
    print("| solver | implementation | median (ms) | time / ready-made | median CPU time (ms) | CPU time / ready-made |")
    print("|---|---|---:|---:|---:|---:|")
    for group, rows in groups.items():
        first = next(iter(rows))
        reference, cpu_reference = statistics.median(times[group, first]), statistics.median(cpu_times[group, first])
        for label in rows:
            median, cpu = statistics.median(times[group, label]), statistics.median(cpu_times[group, label])
            print(f"| {group} | {label} | {median * 1e3:.1f} | {median / reference:.2f}x "
                  f"| {cpu * 1e3:.1f} | {cpu / cpu_reference:.2f}x |")


if __name__ == "__main__":
    main()
