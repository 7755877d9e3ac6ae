"""What paramtx's guarantees cost per step: the numerics policy and the settings checks.

Run: ``python benchmarks/bench_overheads.py`` (``--quick``: fewer repeats).

1. **Numerics policy** (scale-safe norms, NaN/inf never a finite step), on W1 and W3,
   in place as the shims run it: the bare torch kernels with no policy at all
   (``vector_norm`` + ``div_``; ``sign_``), paramtx's lift as it runs on the CPU in
   eager mode (one small reduction and a host check per tensor, the careful path
   only for data that need it), and the lift's unconditional careful path, the one
   CUDA, ``torch.func`` and DTensors take (timed here on the CPU).
2. **Settings checks**: ``_check_groups()``, what every ``step()`` of a shim runs
   first (a fingerprint of each group, compared with the last one checked), on W3's
   62 parameters, against the whole shim step.

Medians in milliseconds, timed in alternating blocks in this one process.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Callable
from unittest import mock

import torch

sys.path.insert(0, os.path.dirname(__file__))

import paramtx.optim as pto  # noqa: E402
from paramtx._lift import lift, numerics  # noqa: E402
from paramtx._transforms.elementwise import SIGN  # noqa: E402
from paramtx._transforms.normalize import NORMALIZE, TINY  # noqa: E402
from workloads import WORKLOADS, make_tensors, optimizer_step  # noqa: E402


def medians(steps: dict[str, Callable[[], object]], repeats: int, block: int = 5) -> dict[str, float]:
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(max(1, repeats // block)):
        for name, step in steps.items():
            for _ in range(block):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def rows_of(tensors):
    return [t.view(t.shape[0], -1) if t.dim() > 1 else t.view(-1, 1) for t in tensors]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 10 if args.quick else 40
    print(f"# torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads; medians (ms)")
    print()
    print("| workload | op (in place) | bare kernels | paramtx, CPU eager | paramtx, careful path | eager / bare | careful / bare |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for workload in ("W1", "W3"):
        _, grads = make_tensors(WORKLOADS[workload])
        work = [g.clone() for g in grads]
        rows = rows_of(work)

        def bare_normalize():
            for r in rows:
                r.div_(torch.linalg.vector_norm(r, 2, -1, keepdim=True).clamp(min=TINY))

        def ours_normalize():
            for w in work:
                lift.apply_("bench", NORMALIZE, -1, w, p=2.0, eps=TINY)

        def careful_normalize():
            with mock.patch.object(numerics, "may_inspect", lambda x: False):
                ours_normalize()

        def bare_sign():
            for w in work:
                w.sign_()

        def ours_sign():
            for w in work:
                lift.apply_("bench", SIGN, None, w)

        def careful_sign():
            with mock.patch.object(numerics, "may_inspect", lambda x: False):
                ours_sign()

        for name, (bare, ours, careful) in {
            "normalize (L2, per row)": (bare_normalize, ours_normalize, careful_normalize),
            "sign": (bare_sign, ours_sign, careful_sign),
        }.items():
            ms = medians({"bare": bare, "ours": ours, "careful": careful}, repeats)
            print(
                f"| {workload} | {name} | {ms['bare']:.2f} | {ms['ours']:.2f} | {ms['careful']:.2f} "
                f"| {ms['ours'] / ms['bare']:.2f}x | {ms['careful'] / ms['bare']:.2f}x |",
                flush=True,
            )
    print()
    print("| workload | shim | whole step | settings check (every step) | share |")
    print("|---|---|---:|---:|---:|")
    params, grads = make_tensors(WORKLOADS["W3"])
    for cls, kwargs in [(pto.L2ProjectedOptim, dict(epsilon=1.0, lr=0.1)), (pto.TopQGradientOptimizer, dict(q=0.9, lr=0.1))]:
        step = optimizer_step(lambda ps: cls(ps, **kwargs), params, grads)
        leaves = [torch.nn.Parameter(p.clone()) for p in params]
        shim = cls(leaves, **kwargs)
        ms = medians({"step": step, "check": shim._check_groups}, repeats)
        print(f"| W3 | {cls.__name__} | {ms['step']:.2f} | {ms['check'] * 1e3:.1f} µs | {ms['check'] / ms['step']:.2%} |", flush=True)


if __name__ == "__main__":
    main()
