"""Perturbed argmax, forward + backward: paramtx against a store-every-sample baseline.

Run: ``python benchmarks/bench_perturbed.py`` (``--reps 1`` for a quick look,
``--threads 1`` for steadier figures on a machine shared with other jobs).

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
one-hot argmax of seed 004 (``F.one_hot(argmax).float()``) except in the
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
    """Seed 004's solver."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="timed runs per row (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per row (0: torch's default)")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, n, b, d, reps, threads = args.worker
        worker(name, int(n), int(b), int(d), int(reps), int(threads))
        return

    threads = args.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}")
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
