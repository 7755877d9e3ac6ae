"""paramtx: functional gradient and parameter transforms for PyTorch.

Pure transforms over pytrees of tensors, composed optax-style into
:class:`GradientTransformation` chains; ``param_ndim`` decides which dims of a
tensor form one datum (the rule is on :func:`paramtx.to_batch`).

Example:
    >>> import torch, paramtx as ptx
    >>> params = {"w": torch.tensor([[3.0, 0.0], [0.0, 0.5]])}
    >>> tx = ptx.chain(
    ...     ptx.normalize(p=2),                                # per row
    ...     ptx.sgd(lr=1.0),
    ...     ptx.projected(ptx.project_l2_ball, epsilon=1.0),   # per row
    ... )
    >>> state = tx.init(params)
    >>> grads = {"w": torch.tensor([[-1.0, 0.0], [0.0, -2.0]])}
    >>> updates, state = tx.update(grads, state, params)
    >>> ptx.apply_updates(params, updates)["w"]
    tensor([[1., 0.],
            [0., 1.]])
"""

import warnings

with warnings.catch_warnings():
    # Without numpy, `import torch` warns "Failed to initialize NumPy" (a class body
    # of torch._subclasses probes the numpy bridge). numpy is optional for torch and
    # unused by paramtx, so a bare install imports silently.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
    import torch

from paramtx._core.base import (
    EmptyState,
    GradientTransformation,
    Params,
    State,
    Updates,
    apply_updates,
    chain,
    identity,
)
from paramtx._lift.param_ndim import to_batch
from paramtx._perturbations.argmax import perturbed_argmax
from paramtx._perturbations.entry import perturbed
from paramtx._perturbations.fenchel_young import FenchelYoungLoss, fenchel_young_loss
from paramtx._perturbations.max import perturbed_max
from paramtx._perturbations.solvers import perturbed_ranks, perturbed_sort, perturbed_topk
from paramtx._transforms.adam import AdamState, adam, adamw
from paramtx._transforms.clipping import clip_by_global_norm
from paramtx._transforms.composition import MaskedNode, MaskedState, MultiTransformState, masked, multi_transform
from paramtx._transforms.elementwise import add, clamp, scale, sign
from paramtx._transforms.frank_wolfe import FrankWolfeState, frank_wolfe
from paramtx._transforms.inject import InjectHyperparamsState, inject_hyperparams
from paramtx._transforms.lmo import lmo_l1, lmo_l1q, lmo_l2, lmo_linf
from paramtx._transforms.normalize import normalize
from paramtx._transforms.projections import (
    project_box,
    project_l1_ball,
    project_l2_ball,
    project_linf_ball,
    projected,
)
from paramtx._transforms.lp_ball import project_lp_ball
from paramtx._transforms.samplers import sample_l1_ball, sample_l2_ball, sample_linf_ball
from paramtx._transforms.simplex import project_simplex
from paramtx._transforms.schedules import (
    constant_schedule,
    cosine_decay_schedule,
    exponential_decay,
    join_schedules,
    linear_schedule,
    warmup_cosine_decay_schedule,
)
from paramtx._transforms.sgd import SgdState, sgd
from paramtx._transforms.top_q import TopQState, top_q
from paramtx._transforms.weight_decay import add_decayed_weights

# States are NamedTuples of tensors: let ``torch.load`` (weights_only by default)
# restore a checkpointed state without the caller allowlisting them.
torch.serialization.add_safe_globals([EmptyState, TopQState, SgdState, AdamState, FrankWolfeState])
torch.serialization.add_safe_globals([InjectHyperparamsState, MaskedState, MaskedNode, MultiTransformState])

__version__ = "0.1.0"

__all__ = [
    # core types
    "GradientTransformation",
    "EmptyState",
    "Params",
    "Updates",
    "State",
    "chain",
    "identity",
    "apply_updates",
    "to_batch",
    # gradient transforms
    "scale",
    "add",
    "clamp",
    "sign",
    "normalize",
    "top_q",
    "TopQState",
    "sgd",
    "SgdState",
    "adam",
    "AdamState",
    "adamw",
    "add_decayed_weights",
    "clip_by_global_norm",
    # composition
    "masked",
    "MaskedState",
    "MaskedNode",
    "multi_transform",
    "MultiTransformState",
    # schedules and injected hyperparameters
    "inject_hyperparams",
    "InjectHyperparamsState",
    "constant_schedule",
    "linear_schedule",
    "cosine_decay_schedule",
    "warmup_cosine_decay_schedule",
    "exponential_decay",
    "join_schedules",
    # Frank-Wolfe
    "lmo_l1",
    "lmo_l1q",
    "lmo_l2",
    "lmo_linf",
    "frank_wolfe",
    "FrankWolfeState",
    # projections
    "project_l2_ball",
    "project_linf_ball",
    "project_l1_ball",
    "project_box",
    "project_simplex",
    "project_lp_ball",
    "projected",
    # uniform samplers of balls
    "sample_l1_ball",
    "sample_l2_ball",
    "sample_linf_ball",
    # perturbed optimizers
    "perturbed",
    "perturbed_argmax",
    "perturbed_max",
    "perturbed_ranks",
    "perturbed_topk",
    "perturbed_sort",
    "fenchel_young_loss",
    "FenchelYoungLoss",
]
