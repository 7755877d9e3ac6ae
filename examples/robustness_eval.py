"""Robust accuracy of the example CNN against L-inf, L2 and sparse L1 attacks, beside torchattacks.

1. Train the CNN of ``adversarial_perturbation.py`` on its synthetic 24x24 patterns
   (nothing is downloaded).
2. Attack every test image at several budgets with
   :func:`paramtx.perturbations.gradient_ascent`, one perturbation per image
   (``param_ndim=-1``), each kept so that ``x0 + delta`` stays a valid image in
   ``[0, 1]``: the perturbation is projected onto the intersection of its Lp ball
   and the box ``[-x0, 1 - x0]``:

   * L-inf PGD: sign of the gradient, a step, ``ptx.project_linf_ball(...,
     lower=-x0, upper=1 - x0)``;
   * L2 PGD, twice: with the exact projection onto the L2 ball intersect the box
     (``ptx.project_l2_ball(..., lower=, upper=)``), and with torchattacks' order
     (onto the ball, then clamped into the box, which is not the projection onto
     the intersection); the exact one also from random starts, its restarts run
     as one batch;
   * sparse L1: the L1q-normalized gradient (top-q of the magnitudes, sign, L1
     normalization), a step, then ``ptx.project_l1_ball(..., lower=, upper=)``.
3. Run torchattacks' ``PGD`` and ``PGDL2`` on the same model, images, budgets,
   step sizes and step counts (no random start), and print both robust
   accuracies side by side with the times; save a PNG of robust accuracy against
   epsilon to ``examples/out/robustness_eval.png``.

Run: ``MPLBACKEND=Agg python examples/robustness_eval.py`` (about 6 CPU-minutes: three
minutes on 2 idle cores). Needs the ``examples`` extra (``pip install -e ".[examples]"``) and, for
the comparison, torchattacks: ``pip install --no-deps torchattacks`` (without
``--no-deps`` pip would replace torch to satisfy its torchvision requirement; torchattacks
itself never imports torchvision).
"""

from __future__ import annotations

import os
import time
from functools import partial
from typing import Callable, Dict, List, Tuple

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import paramtx as ptx  # noqa: E402
from adversarial_perturbation import OUT, accuracy, make_model, make_patterns, train  # noqa: E402
from paramtx.optim import GradientTransformationOptimizer  # noqa: E402
from paramtx.perturbations import AdditivePerturbation, gradient_ascent, uniform_like_l2_n_ball_  # noqa: E402

try:
    import torchattacks
except ImportError:  # the comparison is skipped, with a message
    torchattacks = None

STEPS, RESTARTS, TEST_IMAGES = 20, 4, 500
EPSILONS = {
    "L-inf": [0.01, 0.02, 0.04],
    "L2": [0.25, 0.5, 1.0],
    "L1": [2.0, 5.0, 10.0],
}
L1_Q = 0.99  # each L1 step moves the top 1% of the pixels' gradient magnitudes


def step_size(norm: str, epsilon: float) -> float:
    """Madry et al.'s rule, 2.5 epsilon / steps, for L-inf and L2 (paramtx and torchattacks alike); four times
    that for the sparse L1 steps, each of which moves few pixels."""
    return 2.5 * epsilon / STEPS * (4.0 if norm == "L1" else 1.0)


def pgd(direction: ptx.GradientTransformation, projection: Callable, epsilon: float, alpha: float, box: dict):
    """An optimizer class for ``gradient_ascent``: ``direction`` of the gradient, an SGD step of
    ``alpha``, then ``projection`` onto the ball of radius ``epsilon`` intersect ``box``."""
    return partial(GradientTransformationOptimizer, tx=direction, InnerOpt=torch.optim.SGD, lr=alpha,
                   projection=partial(projection, epsilon=epsilon, **box))


def l2_ball_then_box(params: List[torch.Tensor], epsilon: float, lower: torch.Tensor, upper: torch.Tensor):
    """torchattacks' L2 step: onto the L2 ball, then clamped into the box (lands in the box, not always the ball's
    nearest point of the intersection)."""
    return [torch.clamp(delta, lower, upper) for delta in ptx.project_l2_ball(params, epsilon)]


def box_of(images: torch.Tensor, restarts: int = 1) -> dict:
    """The per-pixel bounds on ``delta`` that keep ``x0 + delta`` in [0, 1] (stacked ``restarts`` times)."""
    stacked = torch.cat([images] * restarts)
    return {"lower": -stacked, "upper": 1 - stacked}


ATTACKS = {  # name -> (norm, optimizer for (epsilon, alpha, box), restarts)
    "L-inf PGD (ball ∩ box)": ("L-inf", lambda e, a, box: pgd(ptx.sign(), ptx.project_linf_ball, e, a, box), 1),
    "L2 PGD (exact ball ∩ box)": ("L2", lambda e, a, box: pgd(ptx.normalize(p=2), ptx.project_l2_ball, e, a, box), 1),
    "L2 PGD (ball, then box)": ("L2", lambda e, a, box: pgd(ptx.normalize(p=2), l2_ball_then_box, e, a, box), 1),
    f"L2 PGD (exact), {RESTARTS} random starts": (
        "L2", lambda e, a, box: pgd(ptx.normalize(p=2), ptx.project_l2_ball, e, a, box), RESTARTS),
    f"sparse L1 (top {1 - L1_Q:.0%}, exact ball ∩ box)": (
        "L1", lambda e, a, box: pgd(ptx.chain(ptx.top_q(L1_Q), ptx.sign(), ptx.normalize(p=1)),
                                    ptx.project_l1_ball, e, a, box), 1),
}
PEERS = {"L-inf": "PGD", "L2": "PGDL2"}  # torchattacks' attack of each norm


def paramtx_attack(model, images, labels, *, name: str, epsilon: float) -> torch.Tensor:
    norm, optimizer, restarts = ATTACKS[name]
    starts = AdditivePerturbation
    if restarts > 1:  # uniform in the L2 ball, then clamped into the box by the first projection
        starts = partial(AdditivePerturbation, init_fn=uniform_like_l2_n_ball_, epsilon=epsilon,
                         generator=torch.Generator().manual_seed(0))
    perturbed, _ = gradient_ascent(
        model=model, data=images, target=labels, steps=STEPS, perturbation_model=starts, restarts=restarts,
        optimizer=optimizer(epsilon, step_size(norm, epsilon), box_of(images, restarts)),
    )
    return perturbed


def torchattacks_attack(model, images, labels, *, norm: str, epsilon: float) -> torch.Tensor:
    attack = getattr(torchattacks, PEERS[norm])
    return attack(model, eps=epsilon, alpha=step_size(norm, epsilon), steps=STEPS, random_start=False)(images, labels)


def evaluate(model, images, labels) -> Tuple[Dict[str, Dict[float, float]], List[tuple]]:
    """Robust accuracy of every attack at every budget, and the rows of the comparison table."""
    runs = []  # budget by budget, paramtx's attacks and torchattacks' in turn (a load change hits both)
    for norm, epsilons in EPSILONS.items():
        for epsilon in epsilons:
            runs += [(name, norm, epsilon, partial(paramtx_attack, name=name))
                     for name, (attack_norm, _, _) in ATTACKS.items() if attack_norm == norm]
            if torchattacks is not None and norm in PEERS:
                runs.append((f"torchattacks {PEERS[norm]}", norm, epsilon, partial(torchattacks_attack, norm=norm)))
    curves: Dict[str, Dict[float, float]] = {}
    seconds: Dict[Tuple[str, float], float] = {}
    for name, norm, epsilon, attack in tqdm(runs, desc="attacks", unit="attack"):
        begin = time.perf_counter()
        perturbed = attack(model, images, labels, epsilon=epsilon)
        seconds[name, epsilon] = time.perf_counter() - begin
        check_valid(name, norm, perturbed, images, epsilon)
        curves.setdefault(name, {0.0: accuracy(model, images, labels)})[epsilon] = accuracy(model, perturbed, labels)
    table = []
    for name, (norm, _, restarts) in ATTACKS.items():
        # torchattacks' columns where it runs the same attack: its norm, no random start
        peer_name = f"torchattacks {PEERS[norm]}" if norm in PEERS and restarts == 1 else None
        for epsilon in EPSILONS[norm]:
            table.append((name, epsilon, curves[name][epsilon], curves.get(peer_name, {}).get(epsilon),
                          seconds[name, epsilon], seconds.get((peer_name, epsilon))))
    return curves, table


def check_valid(name: str, norm: str, perturbed: torch.Tensor, images: torch.Tensor, epsilon: float) -> None:
    """Every attacked image is an image, within its budget (to float32 rounding)."""
    p = {"L-inf": float("inf"), "L2": 2.0, "L1": 1.0}[norm]
    largest = (perturbed - images).flatten(1).norm(p=p, dim=1).max().item()
    if not (perturbed.min() >= 0 and perturbed.max() <= 1 and largest <= epsilon * (1 + 1e-5) + 1e-6):
        raise AssertionError(f"{name}, epsilon {epsilon}: left the image box or the ball (norm {largest:.6g})")


def print_table(table: List[tuple], clean: float) -> None:
    print(f"\nclean accuracy {clean:.1%}; {TEST_IMAGES} test images; {STEPS} steps of 2.5 epsilon / steps "
          f"(L1: 10 epsilon / steps); no random start except where the attack's name says\n")
    print("| attack | epsilon | paramtx robust acc. | torchattacks robust acc. | difference (pp) "
          "| paramtx s | torchattacks s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, epsilon, ours, theirs, our_time, their_time in table:
        cells = ["n/a"] * 3 if theirs is None else [f"{theirs:.1%}", f"{100 * (ours - theirs):+.1f}",
                                                     f"{their_time:.2f}"]
        print(f"| {name} | {epsilon:g} | {ours:.1%} | {cells[0]} | {cells[1]} | {our_time:.2f} | {cells[2]} |")


def save_figure(curves: Dict[str, Dict[float, float]], path: str) -> None:
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for axis, norm in zip(axes, EPSILONS):
        for name, curve in curves.items():
            if (name in ATTACKS and ATTACKS[name][0] == norm) or name == f"torchattacks {PEERS.get(norm)}":
                style = "--" if name.startswith("torchattacks") else "-"
                axis.plot(list(curve), [100 * v for v in curve.values()], style, marker="o", label=name)
        axis.set(title=f"{norm} attacks", xlabel="epsilon", ylabel="robust accuracy (%)", ylim=(0, 100))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(train_images: int = 5000) -> None:
    torch.manual_seed(0)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    images, labels = make_patterns(train_images, generator)
    test_images, test_labels = make_patterns(TEST_IMAGES, generator)
    model = make_model()
    train(model, images, labels)
    model.eval().requires_grad_(False)
    if torchattacks is None:
        print("torchattacks is not installed (pip install --no-deps torchattacks): its columns are n/a")
    curves, table = evaluate(model, test_images, test_labels)
    print_table(table, accuracy(model, test_images, test_labels))
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "robustness_eval.png")
    save_figure(curves, path)
    print(f"\nsaved {os.path.relpath(path)} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
