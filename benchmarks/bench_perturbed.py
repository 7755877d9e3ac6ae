"""Perturbed optimizers: memory, gradient error and speed, paramtx against its peers.

Run: ``python benchmarks/bench_perturbed.py [--section memory|error|speed|all]``
(``--reps 1`` for a quick look, ``--threads 1`` for steadier memory figures on a
machine shared with other jobs). The peers: the PyTorch port of Berthet et al.'s
perturbations (its ``perturbations.py``, read at run time from
``--port PATH`` or ``$PERTURBATIONS_PORT``; its rows are left out without it)
and optax's ``make_perturbed_fun`` under ``jax.jit`` on the CPU (benchmark-only:
``pip install "jax[cpu]" optax``).

``--section error`` (gradient error): the mean squared error, over ``--seeds``
independent estimates, of the gradient of ``<w, E[one_hot(argmax(θ + σZ))]> + c``
against its closed form ``<w, softmax(θ/σ)>`` (Gumbel noise), for D in {5, 50},
σ in {0.5, 0.1}, N in {100, 1000, 10000}, with c = 0 and with a constant c = 10
inside the solver (it changes no true gradient). With normal noise (where
antithetic pairs apply) the reference is paramtx's control-variate estimate at
N = 2e6, whose own error is below 1% of the smallest figure.

``--section speed``: ``ptx.perturbed`` of a dense one-hot argmax (default
options), forward + backward of ``(y ** 2).sum()``, against optax's jit-compiled
``make_perturbed_fun`` (without baseline, as the plain estimator) and the port,
for N=1e4, B=32, D=100 and N=1e5, B=8, D=100, on 1 and 2 threads. Every
measurement runs in a process of its own, pinned with ``taskset`` to as many
cores as threads (jax with ``--xla_cpu_multi_thread_eigen`` and
``intra_op_parallelism_threads`` set), the implementations in turn, round after
round, so a busy machine slows them all alike; the figure is the median over
rounds of each process's median.

``--section memory`` (the original tables):

The baseline is the algorithm of the PyTorch port of Berthet et al.'s
perturbations, written here from its description: draw all N perturbations at
once (with ``torch.distributions.Gumbel``), call the solver on all N perturbed
inputs, keep the perturbed outputs and the noise gradients for backward, and
contract them there. paramtx draws and solves in chunks and keeps only a seed
and, per example, a Jacobian estimate (or nothing, with ``strategy="recompute"``).
The last tables time both backward strategies of ``ptx.perturbed`` on a dense
one-hot solver, where "auto" switches from one to the other.

Every row runs in its own subprocess, so its peak RSS (``ru_maxrss``) is its
own; "base RSS" is the process's RSS after imports and a small warm-up, before
the timed runs (about 235 MiB of it is torch itself), so "peak - base" is what
the algorithm adds. The work: ``y = f(theta)`` for ``theta`` of shape (B, D), Gumbel
noise with sigma 0.5, then ``(y ** 2).sum().backward()``. The table gives the
median time of ``--reps`` runs and the ratios baseline / row. The solver is the
one-hot argmax of the PyTorch port's examples (``F.one_hot(argmax).float()``) except in the
``ptx.perturbed_argmax`` rows, which use paramtx's own one-hot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

SIGMA = 0.5
SIZES = [(100_000, 32, 100), (1_000_000, 1, 5)]
CROSSOVER_SIZES = [(10_000, 8, 100), (10_000, 8, 800)]
ROWS = ["baseline", "perturbed", "perturbed_argmax", "perturbed_argmax_recompute"]
LABELS = {
    "baseline": "store every sample (baseline)",
    "perturbed": "ptx.perturbed(argmax)",
    "perturbed_argmax": "ptx.perturbed_argmax",
    "perturbed_argmax_recompute": 'ptx.perturbed_argmax, strategy="recompute"',
    "dense_jacobian": 'ptx.perturbed(one_hot_argmax), strategy="jacobian"',
    "dense_recompute": 'ptx.perturbed(one_hot_argmax), strategy="recompute"',
}


def seed_argmax(x: torch.Tensor) -> torch.Tensor:
    """The one-hot argmax of the PyTorch port's examples."""
    return F.one_hot(torch.argmax(x, dim=-1), x.shape[-1]).float()


class StoreEverySample(torch.autograd.Function):
    """The baseline: all N perturbed outputs and noise gradients are kept for backward."""

    @staticmethod
    def forward(ctx, theta, func, num_samples, sigma):
        noise = torch.distributions.Gumbel(0.0, 1.0).sample((num_samples, *theta.shape))
        noise_gradient = 1 - torch.exp(-noise)
        perturbed = theta.unsqueeze(0) + sigma * noise                     # (N, B, D)
        outputs = func(perturbed.reshape(-1, *theta.shape[1:]))
        outputs = outputs.reshape(num_samples, theta.shape[0], -1)         # (N, B, D)
        ctx.save_for_backward(outputs, noise_gradient)
        ctx.sigma = sigma
        return outputs.mean(0).reshape(theta.shape)

    @staticmethod
    def backward(ctx, grad_output):
        outputs, noise_gradient = ctx.saved_tensors
        weights = torch.einsum("nbo,bo->nb", outputs, grad_output.reshape(grad_output.shape[0], -1))
        grad = torch.einsum("nbd,nb->bd", noise_gradient.flatten(2), weights)
        return grad.reshape(grad_output.shape) / (ctx.sigma * outputs.shape[0]), None, None, None


def make_row(name: str, num_samples: int):
    import paramtx as ptx

    if name == "baseline":
        return lambda theta: StoreEverySample.apply(theta, seed_argmax, num_samples, SIGMA)
    if name == "perturbed":
        return ptx.perturbed(seed_argmax, num_samples=num_samples, sigma=SIGMA, noise="gumbel")
    if name.startswith("dense_"):  # a dense one-hot solver: the Jacobian costs out * in per draw
        from paramtx._perturbations.argmax import one_hot_argmax

        strategy = name[len("dense_"):]
        return ptx.perturbed(one_hot_argmax, num_samples=num_samples, sigma=SIGMA, noise="gumbel", strategy=strategy)
    strategy = {"perturbed_argmax": "auto", "perturbed_argmax_recompute": "recompute"}[name]
    return lambda theta: ptx.perturbed_argmax(theta, num_samples=num_samples, sigma=SIGMA, strategy=strategy)


def current_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(name: str, num_samples: int, batch: int, dim: int, reps: int, threads: int) -> None:
    """One row, in its own process: print a JSON line of times and memory."""
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    theta = torch.randn(batch, dim, requires_grad=True)

    def run(f):
        theta.grad = None
        (f(theta) ** 2).sum().backward()

    run(make_row(name, 64))  # warm-up: kernels and allocator, at a negligible size
    base_rss = current_rss_mib()
    f = make_row(name, num_samples)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run(f)
        times.append(time.perf_counter() - start)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"times": times, "base_rss": base_rss, "peak_rss": peak_rss}))


def measure(name: str, size: tuple[int, int, int], reps: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--worker", name, *map(str, size), str(reps), str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["median"] = statistics.median(result["times"])
    return result


def table(size: tuple[int, int, int], rows: list[str], reps: int, threads: int) -> list[str]:
    n, b, d = size
    results = {row: measure(row, size, reps, threads) for row in rows}
    reference = results[rows[0]]
    lines = [
        f"N={n:.0e}, B={b}, D={d}",
        "",
        "| implementation | median time (s) | peak RSS (MiB) | peak - base RSS (MiB) "
        "| time ratio | peak-RSS ratio | (peak - base) ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row, r in results.items():
        growth = max(r["peak_rss"] - r["base_rss"], 1.0)
        reference_growth = max(reference["peak_rss"] - reference["base_rss"], 1.0)
        lines.append(
            f"| {LABELS[row]} | {r['median']:.3f} | {r['peak_rss']:.0f} | {growth:.0f} "
            f"| {reference['median'] / r['median']:.1f}x | {reference['peak_rss'] / r['peak_rss']:.1f}x "
            f"| {reference_growth / growth:.0f}x |"
        )
    return lines + [""]


# ------------------------------------------------------------------ the peers

EULER_GAMMA = 0.5772156649015329
ERROR_DIMS, ERROR_SIGMAS, ERROR_NS = (5, 50), (0.5, 0.1), (100, 1000, 10_000)
CONSTANT = 10.0
SPEED_SIZES = [(10_000, 32, 100), (100_000, 8, 100)]


def load_port(path: str | None):
    """The port's ``perturbations`` module, from its file, or None."""
    path = path or os.environ.get("PERTURBATIONS_PORT")
    if not path or not os.path.exists(path):
        return None
    import importlib.util

    spec = importlib.util.spec_from_file_location("perturbations_port", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def jax_environment(threads: int) -> None:
    """XLA's CPU threads, set before jax is imported."""
    os.environ["XLA_FLAGS"] = (
        f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} intra_op_parallelism_threads={threads}"
    )


# -------------------------------------------------------------- gradient error


def error_problem(d: int):
    generator = torch.Generator().manual_seed(d)
    return torch.randn(d, generator=generator), torch.randn(d, generator=generator)


def paramtx_estimates(d, sigma, n, noise, constant, seeds, **options):
    """``seeds`` independent estimates (one per example of a batch: each draws its own noise)."""
    import paramtx as ptx
    from paramtx._perturbations.argmax import one_hot_argmax

    theta, w = error_problem(d)
    f = ptx.perturbed(lambda x: (one_hot_argmax(x) * w).sum(-1) + constant, num_samples=n, sigma=sigma,
                      noise=noise, seed=1000 + n + d, **options)
    batch = theta.expand(seeds, d).clone().requires_grad_(True)
    f(batch).sum().backward()
    return batch.grad.double()


def port_estimates(port, d, sigma, n, noise, constant, seeds):
    theta, w = error_problem(d)
    torch.manual_seed(2000 + n + d)

    def solver(x):
        return (F.one_hot(torch.argmax(x, dim=-1), x.shape[-1]).float() * w).sum(-1) + constant

    f = port.perturbed(solver, num_samples=n, sigma=sigma, noise=noise, batched=True, device="cpu")
    batch = theta.expand(seeds, d).clone().requires_grad_(True)
    f(batch).sum().backward()
    return batch.grad.double()


def optax_estimates(d, sigma, n, noise, constant, seeds, use_baseline):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from optax import perturbations

    theta, w = (jnp.asarray(t.numpy()) for t in error_problem(d))

    def solver(x):
        return jnp.dot(jax.nn.one_hot(jnp.argmax(x, -1), x.shape[-1]), w) + constant

    law = perturbations.Gumbel() if noise == "gumbel" else perturbations.Normal()
    f = perturbations.make_perturbed_fun(solver, num_samples=n, sigma=sigma, noise=law, use_baseline=use_baseline)
    estimate = jax.jit(jax.vmap(jax.grad(f, argnums=1), in_axes=(0, None)))
    keys = jax.random.split(jax.random.key(3000 + n + d), seeds)
    return torch.from_numpy(np.array(estimate(keys, theta))).double()


def exact_gradient(d, sigma, noise):
    theta, w = error_problem(d)
    if noise == "gumbel":
        return torch.func.grad(lambda t: (torch.softmax(t / sigma, -1) * w).sum())(theta).double()
    # No closed form for normal noise: a control-variate estimate with 2e6 samples.
    return paramtx_estimates(d, sigma, 2_000_000, "normal", 0.0, 1, control_variate=True)[0]


def error_table(noise: str, constant: float, seeds: int, port) -> None:
    """Print one table, row by row."""
    columns = ["paramtx plain", "paramtx control variate"]
    if noise == "normal":
        columns.append("paramtx antithetic")
    if port is not None:
        columns.append("port")
    columns += ["optax", "optax baseline"]
    print(f"{noise} noise, constant c = {constant:g}: gradient MSE over {seeds} seeds "
          "(ratio to paramtx's control variate)\n")
    print("| D | sigma | N | " + " | ".join(columns) + " |")
    print("|---:|---:|---:|" + "---:|" * len(columns), flush=True)
    for d in ERROR_DIMS:
        for sigma in ERROR_SIGMAS:
            exact = exact_gradient(d, sigma, noise)
            for n in ERROR_NS:
                common = (d, sigma, n, noise, constant, seeds)
                estimates = {
                    "paramtx plain": paramtx_estimates(*common, control_variate=False),
                    "paramtx control variate": paramtx_estimates(*common, control_variate=True),
                }
                if noise == "normal":
                    estimates["paramtx antithetic"] = paramtx_estimates(*common, antithetic=True)
                if port is not None:
                    estimates["port"] = port_estimates(port, *common)
                estimates["optax"] = optax_estimates(*common, use_baseline=False)
                estimates["optax baseline"] = optax_estimates(*common, use_baseline=True)
                mse = {name: float(((g - exact) ** 2).mean()) for name, g in estimates.items()}
                reference = mse["paramtx control variate"]
                cells = [f"{mse[name]:.2e} ({mse[name] / reference:.2g}x)" for name in columns]
                print(f"| {d} | {sigma} | {n} | " + " | ".join(cells) + " |", flush=True)
    print()


def error_section(seeds: int, port) -> None:
    jax_environment(torch.get_num_threads())
    for noise in ("gumbel", "normal"):
        for constant in (0.0, CONSTANT):
            error_table(noise, constant, seeds, port)


# ----------------------------------------------------------------------- speed

SPEED_ROWS = ["paramtx", "paramtx_recompute", "optax", "port"]
SPEED_LABELS = {
    "paramtx": "ptx.perturbed (defaults)",
    "paramtx_recompute": 'ptx.perturbed, strategy="recompute"',
    "optax": "optax make_perturbed_fun (jit)",
    "port": "port",
}


def speed_worker(name: str, n: int, b: int, d: int, reps: int, threads: int, port_path: str) -> None:
    """One implementation at one size, in its own process: print a JSON line of times."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    theta0 = torch.randn(b, d)
    if name == "optax":
        jax_environment(threads)
        import jax
        import jax.numpy as jnp
        from optax import perturbations

        def solver(x):
            return jax.nn.one_hot(jnp.argmax(x, -1), x.shape[-1])

        f = perturbations.make_perturbed_fun(solver, num_samples=n, sigma=SIGMA, noise=perturbations.Gumbel(),
                                             use_baseline=False)
        step = jax.jit(jax.value_and_grad(lambda t, key: jnp.sum(f(key, t) ** 2)))
        theta = jnp.asarray(theta0.numpy())
        keys = iter(jax.random.split(jax.random.key(0), reps + 1))

        def run():
            jax.block_until_ready(step(theta, next(keys)))
    else:
        if name == "port":
            port = load_port(port_path)
            f = port.perturbed(seed_like_one_hot, num_samples=n, sigma=SIGMA, noise="gumbel", device="cpu")
        else:
            import paramtx as ptx

            strategy = "recompute" if name == "paramtx_recompute" else "auto"
            f = ptx.perturbed(seed_like_one_hot, num_samples=n, sigma=SIGMA, noise="gumbel", strategy=strategy)
        theta = theta0.clone().requires_grad_(True)

        def run():
            theta.grad = None
            (f(theta) ** 2).sum().backward()

    run()  # warm-up (jax: compilation)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    print(json.dumps({"times": times}))


def seed_like_one_hot(x: torch.Tensor) -> torch.Tensor:
    """A dense one-hot argmax along the last dim, as a user would write it in torch."""
    return torch.zeros_like(x).scatter_(-1, x.argmax(-1, keepdim=True), 1.0)


def speed_section(reps: int, rounds: int, port_path: str | None, thread_counts: list[int]) -> None:
    rows = [row for row in SPEED_ROWS if row != "port" or load_port(port_path) is not None]
    cpus = sorted(os.sched_getaffinity(0))
    for threads in thread_counts:
        if len(cpus) < threads:
            print(f"(skipped: {threads} threads, {len(cpus)} CPUs available)")
            continue
        pin = ["taskset", "-c", ",".join(map(str, cpus[:threads]))]
        for n, b, d in SPEED_SIZES:
            runs: dict[str, list[float]] = {row: [] for row in rows}
            for round_ in range(rounds):
                order = rows if round_ % 2 == 0 else rows[::-1]
                for row in order:
                    command = [*pin, sys.executable, __file__, "--speed-worker", row, str(n), str(b), str(d),
                               str(reps), str(threads), port_path or ""]
                    done = subprocess.run(command, capture_output=True, text=True, check=True)
                    times = json.loads(done.stdout.strip().splitlines()[-1])["times"]
                    runs[row].append(statistics.median(times))
            medians = {row: statistics.median(values) for row, values in runs.items()}
            print(f"{threads} thread(s), N={n:.0e}, B={b}, D={d}: median of {rounds} processes x {reps} runs "
                  f"(load average {os.getloadavg()[0]:.1f})")
            print()
            print("| implementation | time (s) | optax / row |" + (" port / row |" if "port" in rows else ""))
            print("|---|---:|---:|" + ("---:|" if "port" in rows else ""))
            for row in rows:
                line = f"| {SPEED_LABELS[row]} | {medians[row]:.3f} | {medians['optax'] / medians[row]:.2f}x |"
                if "port" in rows:
                    line += f" {medians['port'] / medians[row]:.2f}x |"
                print(line)
            print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=["memory", "error", "speed", "all"], default="all")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per row (median reported)")
    parser.add_argument("--rounds", type=int, default=3, help="speed: processes per implementation, in turn")
    parser.add_argument("--seeds", type=int, default=30, help="error: independent estimates per case")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per row (0: torch's default)")
    parser.add_argument("--port", default=None, help="path of the port's perturbations.py")
    parser.add_argument("--speed-threads", default="1,2", help="speed: thread counts, comma-separated")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--speed-worker", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, n, b, d, reps, threads = args.worker
        worker(name, int(n), int(b), int(d), int(reps), int(threads))
        return
    if args.speed_worker:
        name, n, b, d, reps, threads, port_path = args.speed_worker
        speed_worker(name, int(n), int(b), int(d), int(reps), int(threads), port_path)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    port = load_port(args.port)
    print(f"torch {torch.__version__}, {threads} threads, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}; "
          f"port: {'found' if port is not None else 'not found (rows left out)'}\n")
    if args.section in ("error", "all"):
        error_section(args.seeds, port)
    if args.section in ("speed", "all"):
        thread_counts = [int(t) for t in args.speed_threads.split(",")]
        speed_section(args.reps, args.rounds, args.port or os.environ.get("PERTURBATIONS_PORT"), thread_counts)
    if args.section in ("memory", "all"):
        print(f"Ratios are baseline / row (> 1: the row is faster or smaller); medians of {args.reps} runs.\n")
        for size in SIZES:
            print("\n".join(table(size, ROWS, args.reps, args.threads)))
        print("Strategy crossover for dense solutions (\"auto\" builds the Jacobian iff out*in <= 128 (out + in)")
        print("and it fits in 64 MiB); ratios are jacobian / row.\n")
        for size in CROSSOVER_SIZES:
            rows = ["dense_jacobian", "dense_recompute"]
            print("\n".join(table(size, rows, args.reps, args.threads)))
    print(f"load average at end {os.getloadavg()[0]:.1f}")

if __name__ == "__main__":
    main()
