"""paramtx on two processes: FSDP2-sharded parameters give the single-process answer.

Run: ``python examples/distributed_training.py`` (it starts two CPU processes
with the gloo backend on 127.0.0.1; ``torchrun --nproc-per-node 2
examples/distributed_training.py`` works too).

Each rank builds the same small model and shards it with FSDP2's
``fully_shard``: every parameter and gradient becomes a ``DTensor`` cut along
its first dim, half on each rank. The ranks train on their halves of each
batch, twice:

1. with the torch.optim shim ``L2ProjectedOptim`` (per row: L2-normalized
   gradient, SGD step, projection onto the L2 ball), unchanged;
2. with a functional chain whose datum is the *whole* tensor
   (``param_ndim=None``), so every norm spans both ranks' shards; paramtx
   takes it over the whole datum (DTensor all-reduces the partial norms).

Then each rank gathers its parameters and compares them with the same
training run in one process, unsharded, on the full batches.
"""

from __future__ import annotations

import datetime
import gc
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import paramtx as ptx
from paramtx.optim import L2ProjectedOptim

WORLD_SIZE, STEPS, BATCH = 2, 5, 16
LR, EPSILON = 0.2, 1.0


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))


def batch(step: int, rank: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step``; rank ``r`` of ``WORLD_SIZE`` takes its slice (``None``: all of it)."""
    generator = torch.Generator().manual_seed(step)
    inputs, targets = torch.randn(BATCH, 8, generator=generator), torch.randn(BATCH, 3, generator=generator)
    if rank is None:
        return inputs, targets
    return inputs.chunk(WORLD_SIZE)[rank], targets.chunk(WORLD_SIZE)[rank]


def loss_of(model: torch.nn.Module, step: int, rank: int | None) -> torch.Tensor:
    inputs, targets = batch(step, rank)
    return torch.nn.functional.mse_loss(model(inputs), targets)


def train_with_shim(model: torch.nn.Module, rank: int | None) -> None:
    optimizer = L2ProjectedOptim(model.parameters(), epsilon=EPSILON, lr=LR)
    for step in range(STEPS):
        optimizer.zero_grad()
        loss_of(model, step, rank).backward()
        optimizer.step()


def train_with_chain(model: torch.nn.Module, rank: int | None) -> None:
    tx = ptx.chain(
        ptx.normalize(2, param_ndim=None),  # one datum = one whole (sharded) tensor
        ptx.sgd(LR, momentum=0.9),
        ptx.projected(ptx.project_l2_ball, epsilon=EPSILON, param_ndim=None),
    )
    params = dict(model.named_parameters())
    state = tx.init(params)
    for step in range(STEPS):
        model.zero_grad()
        loss_of(model, step, rank).backward()
        grads = {name: p.grad for name, p in params.items()}
        updates, state = tx.update(grads, state, params)
        with torch.no_grad():
            for name, new in ptx.apply_updates(params, updates).items():
                params[name].copy_(new)


def run(rank: int) -> None:
    from torch.distributed.fsdp import fully_shard

    failed = False
    for name, train in [("L2ProjectedOptim", train_with_shim), ("functional chain", train_with_chain)]:
        sharded = make_model()
        fully_shard(sharded)  # parameters and gradients: DTensor, Shard(0) over the 2 ranks
        train(sharded, rank)
        single = make_model()
        train(single, rank=None)  # one process, unsharded, full batches
        gap = max(
            (p.full_tensor() - q).abs().max().item() for p, q in zip(sharded.parameters(), single.parameters())
        )
        gaps = [None] * WORLD_SIZE
        dist.all_gather_object(gaps, gap)  # rank 0 prints every rank's result
        for r, g in enumerate(gaps):
            failed |= g >= 1e-5
            if rank == 0:
                print(
                    f"rank {r}: {name:<16} FSDP2-sharded vs single process: max |difference| = {g:.1e} "
                    f"-> {'agree' if g < 1e-5 else 'DISAGREE'}",
                    flush=True,
                )
    if failed:
        raise SystemExit(1)


def worker(rank: int, init_method: str) -> None:
    # One process per rank on this machine: share its cores rather than oversubscribe them,
    # and keep gloo's connections on the loopback interface.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // WORLD_SIZE))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo", init_method=init_method, rank=rank, world_size=WORLD_SIZE, timeout=datetime.timedelta(seconds=60)
    )
    run_and_leave(rank)


def run_and_leave(rank: int) -> None:
    """``run(rank)``, then leave the group once every rank is done with it."""
    try:
        run(rank)
        # Without this, a rank that finishes first may tear down its gloo connections
        # while its peer's are still open, and the peer aborts on exit.
        dist.barrier()
    finally:
        dist.destroy_process_group()
        # FSDP2's modules hold the group through reference cycles, which only the garbage
        # collector frees. Left to the interpreter's exit, that frees the group while
        # Python is shutting down: a gloo worker thread that then needs Python is killed,
        # and std::terminate aborts the process. Free it now, while Python is whole.
        gc.collect()


def main() -> None:
    if "RANK" in os.environ:  # started by torchrun
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
        run_and_leave(dist.get_rank())
        return
    with tempfile.TemporaryDirectory() as rendezvous:  # the ranks meet through a file: no port to pick
        mp.spawn(worker, args=(f"file://{rendezvous}/store",), nprocs=WORLD_SIZE, join=True)


if __name__ == "__main__":
    main()
