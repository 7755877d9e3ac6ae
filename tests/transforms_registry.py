"""Every public transform factory of paramtx, with sample arguments.

The battery in ``test_battery.py`` drives each entry through the same checks;
``test_registry_covers_every_public_transform_and_projection`` fails when a public
transform or projection is missing here, so a new one cannot skip the battery.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import optree
import torch

import paramtx as ptx


@dataclasses.dataclass(frozen=True)
class Entry:
    """One transform configuration.

    Attributes:
        name: the test id.
        build: ``build(param_ndim)`` -> the transform; entries that are not per
            datum ignore ``param_ndim`` (an element-wise map is per datum for
            any choice of datum, so the per-datum checks still hold for them).
        factories: the public names this entry exercises (for the coverage check).
        per_datum: ``build`` honours ``param_ndim``.
        needs_params: ``update`` must be given ``params``.
        leafwise: a leaf's result depends on that leaf only. False for ``dq > 0``,
            where the leaf's position in the tree picks its draw of ``q``.
    """

    name: str
    build: Callable[[Optional[int]], ptx.GradientTransformation]
    factories: frozenset[str]
    per_datum: bool = False
    needs_params: bool = False
    leafwise: bool = True

    def __repr__(self) -> str:
        return self.name


def _entry(name, build, factories, **flags) -> Entry:
    return Entry(name, build, frozenset(factories.split()), **flags)


def _is_vector(x: torch.Tensor) -> bool:
    # (a datum of one element, shape (1,), is not one: element-wise entries must treat it as a 0-d leaf)
    return x.ndim == 1 and x.shape[0] > 1


def _not_vectors(params):
    """A mask by each leaf's own shape (so a leaf alone is masked as in its tree): all but the vectors."""
    return optree.tree_map(lambda x: not _is_vector(x), params)


def _vector_labels(params):
    return optree.tree_map(lambda x: "vector" if _is_vector(x) else "other", params)


ENTRIES: list[Entry] = [
    _entry("identity", lambda nd: ptx.identity(), "identity"),
    _entry("chain_empty", lambda nd: ptx.chain(), "chain"),
    _entry("scale", lambda nd: ptx.scale(-0.5), "scale"),
    _entry("add", lambda nd: ptx.add(0.25), "add"),
    _entry("clamp_both", lambda nd: ptx.clamp(-0.4, 0.3), "clamp"),
    _entry("clamp_min", lambda nd: ptx.clamp(min=-0.2), "clamp"),
    _entry("clamp_max", lambda nd: ptx.clamp(max=0.1), "clamp"),
    _entry("sign", lambda nd: ptx.sign(), "sign"),
    _entry("normalize_p1", lambda nd: ptx.normalize(1, param_ndim=nd), "normalize", per_datum=True),
    _entry("normalize_p2", lambda nd: ptx.normalize(2, param_ndim=nd), "normalize", per_datum=True),
    _entry("normalize_pinf", lambda nd: ptx.normalize(math.inf, param_ndim=nd), "normalize", per_datum=True),
    _entry("normalize_p3", lambda nd: ptx.normalize(3, param_ndim=nd), "normalize", per_datum=True),
    _entry("top_q", lambda nd: ptx.top_q(0.5, param_ndim=nd), "top_q", per_datum=True),
    _entry(
        "top_q_dq",
        lambda nd: ptx.top_q(0.4, dq=0.3, param_ndim=nd, seed=11),
        "top_q",
        per_datum=True,
        leafwise=False,
    ),
    _entry("sgd", lambda nd: ptx.sgd(0.1), "sgd"),
    _entry(
        "sgd_momentum_dampening_wd",
        lambda nd: ptx.sgd(0.1, momentum=0.9, dampening=0.2, weight_decay=0.05),
        "sgd",
        needs_params=True,
    ),
    _entry("sgd_nesterov", lambda nd: ptx.sgd(0.1, momentum=0.8, nesterov=True), "sgd"),
    _entry("adam", lambda nd: ptx.adam(0.05), "adam"),
    _entry(
        "adam_wd",
        lambda nd: ptx.adam(0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
        "adam",
        needs_params=True,
    ),
    _entry("lmo_l1", lambda nd: ptx.lmo_l1(param_ndim=nd), "lmo_l1", per_datum=True),
    _entry("lmo_l1q", lambda nd: ptx.lmo_l1q(0.5, param_ndim=nd), "lmo_l1q", per_datum=True),
    _entry(
        "lmo_l1q_dq",
        lambda nd: ptx.lmo_l1q(0.4, dq=0.3, param_ndim=nd, seed=5),
        "lmo_l1q",
        per_datum=True,
        leafwise=False,
    ),
    _entry("lmo_l2", lambda nd: ptx.lmo_l2(param_ndim=nd), "lmo_l2", per_datum=True),
    _entry("lmo_linf", lambda nd: ptx.lmo_linf(), "lmo_linf"),
    _entry("frank_wolfe", lambda nd: ptx.frank_wolfe(0.5), "frank_wolfe", needs_params=True),
    _entry(
        "frank_wolfe_fixed_lr",
        lambda nd: ptx.frank_wolfe(0.5, lr=0.3, use_default_lr_schedule=False),
        "frank_wolfe",
        needs_params=True,
    ),
    _entry(
        "fw_l1",
        lambda nd: ptx.chain(ptx.lmo_l1(param_ndim=nd), ptx.frank_wolfe(0.7)),
        "chain lmo_l1 frank_wolfe",
        per_datum=True,
        needs_params=True,
    ),
    _entry(
        "fw_l1q",
        lambda nd: ptx.chain(ptx.lmo_l1q(0.3, param_ndim=nd), ptx.frank_wolfe(0.7)),
        "chain lmo_l1q frank_wolfe",
        per_datum=True,
        needs_params=True,
    ),
    _entry(
        "fw_l2",
        lambda nd: ptx.chain(ptx.lmo_l2(param_ndim=nd), ptx.frank_wolfe(0.7)),
        "chain lmo_l2 frank_wolfe",
        per_datum=True,
        needs_params=True,
    ),
    _entry(
        "fw_linf",
        lambda nd: ptx.chain(ptx.lmo_linf(), ptx.frank_wolfe(0.7)),
        "chain lmo_linf frank_wolfe",
        needs_params=True,
    ),
    _entry(
        "projected_l2",
        lambda nd: ptx.projected(ptx.project_l2_ball, epsilon=0.6, param_ndim=nd),
        "projected project_l2_ball",
        per_datum=True,
        needs_params=True,
    ),
    _entry(
        "projected_l1",
        lambda nd: ptx.projected(ptx.project_l1_ball, epsilon=0.6, param_ndim=nd),
        "projected project_l1_ball",
        per_datum=True,
        needs_params=True,
    ),
    _entry(
        "projected_linf",
        lambda nd: ptx.projected(ptx.project_linf_ball, epsilon=0.3),
        "projected project_linf_ball",
        needs_params=True,
    ),
    _entry(
        "projected_box",
        lambda nd: ptx.projected(ptx.project_box, lower=-0.2, upper=0.5),
        "projected project_box",
        needs_params=True,
    ),
    _entry(
        "projected_l2_box",
        lambda nd: ptx.projected(ptx.project_l2_ball, epsilon=0.6, param_ndim=nd, lower=-0.4, upper=0.5),
        "projected project_l2_ball",
        per_datum=True,
        needs_params=True,
    ),
    _entry(
        "projected_l1_box",
        lambda nd: ptx.projected(ptx.project_l1_ball, epsilon=0.6, param_ndim=nd, lower=-0.4, upper=0.5),
        "projected project_l1_ball",
        per_datum=True,
        needs_params=True,
    ),
    _entry(
        "projected_linf_box",
        lambda nd: ptx.projected(ptx.project_linf_ball, epsilon=0.3, lower=-0.2, upper=0.5),
        "projected project_linf_ball",
        needs_params=True,
    ),
    _entry(
        "projected_simplex",
        lambda nd: ptx.projected(ptx.project_simplex, scale=1.5, param_ndim=nd),
        "projected project_simplex",
        per_datum=True,
        needs_params=True,
    ),
    _entry(
        "projected_lp",
        lambda nd: ptx.projected(ptx.project_lp_ball, p=3.0, epsilon=0.6, param_ndim=nd),
        "projected project_lp_ball",
        per_datum=True,
        needs_params=True,
    ),
    _entry(
        "chain_normalize_sgd_projected",
        lambda nd: ptx.chain(
            ptx.normalize(2, param_ndim=nd),
            ptx.sgd(0.3, momentum=0.5),
            ptx.projected(ptx.project_l2_ball, epsilon=0.8, param_ndim=nd),
        ),
        "chain normalize sgd projected project_l2_ball",
        per_datum=True,
        needs_params=True,
    ),
    _entry(
        "chain_topq_sign_scale_add_clamp",
        lambda nd: ptx.chain(
            ptx.top_q(0.3, param_ndim=nd), ptx.sign(), ptx.scale(2.0), ptx.add(-0.5), ptx.clamp(-1.0, 1.0)
        ),
        "chain top_q sign scale add clamp",
        per_datum=True,
    ),
    # schedules and injected hyperparameters
    _entry(
        "sgd_scheduled_lr",
        lambda nd: ptx.sgd(lr=ptx.warmup_cosine_decay_schedule(0.0, 0.3, 2, 10), momentum=0.9),
        "sgd",
    ),
    _entry(
        "adam_tensor_lr_scheduled_wd",
        lambda nd: ptx.adam(lr=torch.tensor(0.05), weight_decay=ptx.linear_schedule(0.1, 0.0, 5)),
        "adam",
        needs_params=True,
    ),
    # weight decay, clipping
    _entry("adamw", lambda nd: ptx.adamw(0.05, weight_decay=0.1), "adamw", needs_params=True),
    _entry(
        "adamw_masked_scheduled_lr",
        lambda nd: ptx.adamw(ptx.exponential_decay(0.05, 1, 0.9), betas=(0.8, 0.99), mask=_not_vectors),
        "adamw",
        needs_params=True,
    ),
    _entry(
        "add_decayed_weights_masked",
        lambda nd: ptx.add_decayed_weights(0.2, mask=_not_vectors),
        "add_decayed_weights",
        needs_params=True,
    ),
    # global over the tree: a leaf's result depends on the others
    _entry("clip_by_global_norm", lambda nd: ptx.clip_by_global_norm(1.5), "clip_by_global_norm", leafwise=False),
    # composition
    _entry(
        "masked_sgd_momentum",
        lambda nd: ptx.masked(ptx.sgd(0.1, momentum=0.9), _not_vectors),
        "masked sgd",
    ),
    _entry(
        "multi_transform",
        lambda nd: ptx.multi_transform(
            {"vector": ptx.sgd(0.3), "other": ptx.chain(ptx.add_decayed_weights(0.1), ptx.adam(0.05))}, _vector_labels
        ),
        "multi_transform sgd chain add_decayed_weights adam",
        needs_params=True,
    ),
    _entry(
        "chain_clip_adamw_inject",
        lambda nd: ptx.chain(
            ptx.clip_by_global_norm(2.0),
            ptx.inject_hyperparams(ptx.adamw)(lr=ptx.cosine_decay_schedule(0.05, 8), weight_decay=0.01),
        ),
        "chain clip_by_global_norm adamw",
        needs_params=True,
        leafwise=False,
    ),
]
