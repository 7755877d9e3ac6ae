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
from paramtx._transforms.adam import AdamState, adam
from paramtx._transforms.elementwise import add, clamp, scale, sign
from paramtx._transforms.frank_wolfe import FrankWolfeState, frank_wolfe
from paramtx._transforms.lmo import lmo_l1, lmo_l1q, lmo_l2, lmo_linf
from paramtx._transforms.normalize import normalize
from paramtx._transforms.projections import (
    project_box,
    project_l1_ball,
    project_l2_ball,
    project_linf_ball,
    projected,
)
from paramtx._transforms.sgd import SgdState, sgd
from paramtx._transforms.top_q import TopQState, top_q

# States are NamedTuples of tensors: let ``torch.load`` (weights_only by default)
# restore a checkpointed state without the caller allowlisting them.
torch.serialization.add_safe_globals([EmptyState, TopQState, SgdState, AdamState, FrankWolfeState])

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
    "projected",
    # perturbed optimizers
    "perturbed",
    "perturbed_argmax",
    "fenchel_young_loss",
    "FenchelYoungLoss",
]
