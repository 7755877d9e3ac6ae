"""W1-W3 and the perturbed optimizers on one device (a GPU, or the CPU), side by side in one run.

Run: ``python benchmarks/bench_device.py --device cuda`` (``--quick``: fewer repeats).
``benchmarks/gpu_check.sh`` runs it after the test suite.

Rows, each a median over steps timed with the device synchronized before and
after each step (milliseconds), against the bare ``torch.optim.SGD(foreach=True)``
step on the same workload (``workloads.py``: W1 256 perturbations of (3, 32, 32),
W2 64 of (3, 224, 224), W3 ResNet-18's 62 parameter tensors):

* functional eager: ``tx.update`` + ``apply_updates``;
* shim: the ``paramtx.optim`` class's ``step()``;
* compiled: the functional step under ``torch.compile`` (inductor), writing
  the new parameters in place (``torch._foreach_copy_``), compile time apart;
* perturbed: forward + backward of ``perturbed_argmax`` and of the generic
  ``perturbed(argmax)`` at N=1e5, B=32, D=100, with the device's peak memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable

import torch

sys.path.insert(0, os.path.dirname(__file__))

import paramtx as ptx  # noqa: E402
import paramtx.optim as pto  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

LR, EPSILON, Q = 0.1, 1.0, 0.9


def timed_ms(step: Callable[[], object], device: torch.device, repeats: int, warmup: int = 3) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def tensors(shapes, device: torch.device, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    params = [(torch.randn(s, generator=generator) * 0.05).to(device) for s in shapes]
    grads = [torch.randn(s, generator=generator).to(device) for s in shapes]
    return params, grads


def functional(tx_factory, params, grads) -> Callable[[], object]:
    tx = tx_factory()
    state = [tx.init(params)]

    def step():
        updates, state[0] = tx.update(grads, state[0], params)
        return ptx.apply_updates(params, updates)

    return step


def compiled(tx_factory, params, grads) -> tuple[Callable[[], object], float]:
    tx = tx_factory()
    live = [p.clone() for p in params]
    state = [tx.init(live)]

    @torch.compile
    def step_fn(params, grads, state):
        updates, state = tx.update(grads, state, params)
        torch._foreach_copy_(params, ptx.apply_updates(params, updates))
        return state

    def step():
        state[0] = step_fn(live, grads, state[0])

    start = time.perf_counter()
    step()
    return step, time.perf_counter() - start


def shim(make, params, grads) -> Callable[[], object]:
    leaves = [torch.nn.Parameter(p.clone()) for p in params]
    for leaf, grad in zip(leaves, grads):
        leaf.grad = grad.clone()
    optimizer = make(leaves)
    return optimizer.step


CHAINS = {
    "L2 normalize+project": lambda: ptx.chain(ptx.normalize(2), ptx.sgd(LR), ptx.projected(ptx.project_l2_ball, epsilon=EPSILON)),
    "top-q q=0.9": lambda: ptx.chain(ptx.top_q(Q), ptx.sgd(LR)),
    "top-q q=0.9 dq=0.05": lambda: ptx.chain(ptx.top_q(Q, dq=0.05), ptx.sgd(LR)),
    "L1q Frank-Wolfe q=0.9": lambda: ptx.chain(ptx.lmo_l1q(Q), ptx.frank_wolfe(EPSILON)),
    "sign": lambda: ptx.chain(ptx.sign(), ptx.sgd(LR)),
    "Adam": lambda: ptx.adam(1e-3),
}
SHIMS = {
    "L2 normalize+project": lambda ps: pto.L2ProjectedOptim(ps, epsilon=EPSILON, lr=LR),
    "top-q q=0.9": lambda ps: pto.TopQGradientOptimizer(ps, q=Q, lr=LR),
    "L1q Frank-Wolfe q=0.9": lambda ps: pto.L1qFrankWolfe(ps, q=Q, epsilon=EPSILON),
    "sign": lambda ps: pto.SignedGradientOptim(ps, lr=LR),
}
ROWS = [  # (workload, transform, compiled too)
    ("W1", "L2 normalize+project", True),
    ("W1", "top-q q=0.9", False),
    ("W1", "top-q q=0.9 dq=0.05", True),
    ("W1", "L1q Frank-Wolfe q=0.9", True),
    ("W2", "top-q q=0.9", False),
    ("W3", "L2 normalize+project", True),
    ("W3", "sign", True),
    ("W3", "Adam", True),
]


def perturbed_rows(device: torch.device, repeats: int) -> list[str]:
    def argmax(x):
        return torch.nn.functional.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype)

    theta = torch.randn(32, 100, generator=torch.Generator().manual_seed(0)).to(device).requires_grad_(True)
    cases = {
        "perturbed_argmax": lambda: ptx.perturbed_argmax(theta, num_samples=100_000, sigma=0.5, seed=0),
        "perturbed(argmax)": lambda: ptx.perturbed(argmax, num_samples=100_000, sigma=0.5, noise="gumbel", seed=0)(theta),
    }
    lines = []
    for name, forward in cases.items():
        def step():
            theta.grad = None
            (forward() ** 2).sum().backward()

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        ms = timed_ms(step, device, repeats=max(3, repeats // 3), warmup=1)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
        lines.append(f"| N=1e5, B=32, D=100 | {name} | {ms:.2f} | {peak:.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    device = torch.device(args.device)
    repeats = 7 if args.quick else 25
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# paramtx on {name}: torch {torch.__version__}; medians of {repeats} synchronized steps (ms)")
    print()
    print("| workload | transform | SGD | functional | shim | compiled | compile (s) | functional / SGD | compiled / SGD |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    data = {}
    for workload, transform, with_compile in ROWS:
        if workload not in data:
            data[workload] = tensors(WORKLOADS[workload], device)
        params, grads = data[workload]
        sgd = timed_ms(shim(lambda ps: torch.optim.SGD(ps, lr=LR, foreach=True), params, grads), device, repeats)
        eager = timed_ms(functional(CHAINS[transform], params, grads), device, repeats)
        shim_ms = timed_ms(shim(SHIMS[transform], params, grads), device, repeats) if transform in SHIMS else None
        compiled_ms = compile_s = None
        if with_compile:
            torch._dynamo.reset()
            step, compile_s = compiled(CHAINS[transform], params, grads)
            compiled_ms = timed_ms(step, device, repeats)
        cell = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        ratio = lambda v: "-" if v is None else f"{v / sgd:.2f}x"  # noqa: E731
        print(
            f"| {workload} | {transform} | {sgd:.2f} | {eager:.2f} | {cell(shim_ms)} | {cell(compiled_ms)} "
            f"| {cell(compile_s)} | {ratio(eager)} | {ratio(compiled_ms)} |",
            flush=True,
        )
    print()
    print("| perturbed | implementation | fwd+bwd (ms) | peak device memory (MiB) |")
    print("|---|---|---:|---:|")
    for line in perturbed_rows(device, repeats):
        print(line, flush=True)


if __name__ == "__main__":
    main()
