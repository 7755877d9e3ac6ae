"""``adam`` and ``adamw``: the steps of ``torch.optim.Adam`` and ``torch.optim.AdamW`` as transforms."""

from __future__ import annotations

import collections.abc
from typing import Any, NamedTuple, Optional

import torch

from paramtx._core import tree as _tree
from paramtx._core import validate as _validate
from paramtx._core.base import GradientTransformation, Params, Updates, rebuildable
from paramtx._transforms.composition import Mask, check_mask, mask_leaves
from paramtx._transforms.inject import Hyperparameter, check_hyperparameter, is_zero, plus_scaled, schedulable


class AdamState(NamedTuple):
    """Per-leaf step counts and first/second moment estimates.

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.adam().init([torch.zeros(2)])
        AdamState(count=[tensor(0)], mu=[tensor([0., 0.])], nu=[tensor([0., 0.])])
    """

    count: Any
    mu: Any
    nu: Any


@schedulable("lr", "eps", "weight_decay")
@rebuildable
def adam(
    lr: Hyperparameter = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: Hyperparameter = 1e-8,
    weight_decay: Hyperparameter = 0.0,
) -> GradientTransformation:
    r"""The ``torch.optim.Adam`` step (L2 weight decay, no amsgrad) as a transform.

    With ``d = g + weight_decay * p``:
    :math:`m \leftarrow \beta_1 m + (1-\beta_1) d`,
    :math:`v \leftarrow \beta_2 v + (1-\beta_2) d^2`, and the update is
    :math:`-\frac{lr}{1-\beta_1^t} \cdot m / (\sqrt{v} / \sqrt{1-\beta_2^t} + eps)`
    with ``t`` the leaf's step number. Numerically equal to
    ``torch.optim.Adam`` with the same settings. Scope: per element. Needs
    ``params`` only when ``weight_decay`` is not the number 0. ``lr``, ``eps``
    and ``weight_decay`` may be numbers, 0-d tensors or schedules (see
    :func:`inject_hyperparams`).

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.adam(lr=0.1)
        >>> p = torch.tensor([1.0, -1.0])
        >>> u, state = tx.update(torch.tensor([2.0, -0.5]), tx.init(p), p)
        >>> u                                   # the first Adam step is -lr * sign(g)
        tensor([-0.1000,  0.1000])
        >>> state.count
        tensor(1)
    """
    return _adam("adam", lr, betas, eps, weight_decay, decoupled=False, mask=None)


@schedulable("lr", "eps", "weight_decay")
@rebuildable
def adamw(
    lr: Hyperparameter = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: Hyperparameter = 1e-8,
    weight_decay: Hyperparameter = 1e-2,
    mask: Optional[Mask] = None,
) -> GradientTransformation:
    r"""The ``torch.optim.AdamW`` step (decoupled weight decay, no amsgrad) as a transform.

    The Adam step of the gradient alone (see :func:`adam`) minus the decay
    ``lr * weight_decay * p``: the parameter goes to
    :math:`(1 - lr \cdot wd)\, p - \frac{lr}{1-\beta_1^t} m / (\sqrt{v} / \sqrt{1-\beta_2^t} + eps)`,
    as ``torch.optim.AdamW`` moves it (the defaults are its defaults; the
    parameters agree to rounding, as ``p + u`` rounds differently from
    AdamW's in-place ``p * (1 - lr * wd)`` then step). Scope: per element.
    Needs ``params`` unless ``weight_decay`` is the number 0.

    Args:
        lr, eps, weight_decay: numbers, 0-d tensors or schedules (see
            :func:`inject_hyperparams`).
        betas: the moments' decay rates.
        mask: where the weight decay applies: a pytree of bools with the
            params' structure (or a prefix of it), or a function of the params
            returning one (as :func:`masked`); ``None``: everywhere. The Adam
            step applies everywhere.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.adamw(lr=0.1, weight_decay=0.5, mask={"w": True, "b": False})
        >>> p = {"w": torch.tensor([2.0]), "b": torch.tensor([2.0])}
        >>> g = {"w": torch.tensor([1.0]), "b": torch.tensor([1.0])}
        >>> tx.update(g, tx.init(p), p)[0]   # -lr * sign(g), and -lr * wd * p on w
        {'w': tensor([-0.2000]), 'b': tensor([-0.1000])}
    """
    return _adam("adamw", lr, betas, eps, weight_decay, decoupled=True, mask=mask)


def _adam(
    api: str,
    lr: Any,
    betas: Any,
    eps: Any,
    weight_decay: Any,
    *,
    decoupled: bool,
    mask: Optional[Mask],
) -> GradientTransformation:
    """The Adam step, with L2 (``decoupled=False``) or decoupled weight decay on the ``mask``ed leaves."""
    lr = check_hyperparameter(api, "lr", lr, _validate.NON_NEGATIVE)
    # any sequence of two (a tuple, a list, a config's list)
    if not isinstance(betas, collections.abc.Sequence) or isinstance(betas, str) or len(betas) != 2:
        raise TypeError(f"{api}: betas must be a pair of floats, got {betas!r}")
    beta1 = _validate.check_real(api, "betas[0]", betas[0], low=0.0, high=1.0, high_inclusive=False)
    beta2 = _validate.check_real(api, "betas[1]", betas[1], low=0.0, high=1.0, high_inclusive=False)
    # (eps = 0 would turn a zero gradient into 0 / 0)
    eps = check_hyperparameter(api, "eps", eps, _validate.POSITIVE)
    weight_decay = check_hyperparameter(api, "weight_decay", weight_decay, _validate.NON_NEGATIVE)
    decays = not is_zero(weight_decay)
    if mask is not None:
        check_mask(api, mask)
    decay_rate = lr * weight_decay  # (the decoupled decay's factor: a float for numbers, as AdamW's)

    def init_fn(params: Params) -> AdamState:
        return AdamState(
            _tree.zero_counts(api, params), _tree.zeros_like_tree(api, params), _tree.zeros_like_tree(api, params)
        )

    def corrections(counts: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per leaf, ``(-lr / (1 - beta1**t), sqrt(1 - beta2**t))`` with ``t = count + 1``.

        In float64, as torch.optim.Adam computes them in Python floats; one set of
        small kernels for all the leaves of a device rather than one per leaf.
        """
        out: list = [None] * len(counts)
        for device in {c.device for c in counts}:
            where = [i for i, c in enumerate(counts) if c.device == device]
            t = torch.stack([counts[i] for i in where]).to(torch.float64) + 1
            negative_step = -lr / (1 - torch.pow(beta1, t))
            correction2_sqrt = torch.sqrt(1 - torch.pow(beta2, t))
            for i, a, b in zip(where, negative_step.unbind(), correction2_sqrt.unbind()):
                out[i] = (a, b)
        return out

    def leaf_step(grad, param, mu, nu, negative_step, correction2_sqrt, decay):
        d = plus_scaled(grad, param, weight_decay) if decay and not decoupled else grad
        mu = torch.lerp(mu, d, 1 - beta1)
        nu = torch.addcmul(nu * beta2, d, d, value=1 - beta2)
        denom = nu.sqrt() / correction2_sqrt + eps
        # A 0-d leaf would be promoted by the float64 0-d corrections: keep its dtype.
        step = ((mu / denom) * negative_step).to(mu.dtype)
        if decay and decoupled:
            step = plus_scaled(step, param, -decay_rate)
        return step, mu, nu

    def update_fn(updates: Updates, state: AdamState, params: Optional[Params] = None):
        _validate.check_state(api, state, AdamState)
        leaves, spec = _tree.checked_leaves(api, updates)
        param_leaves = _tree.param_leaves(api, spec, params, required=decays)
        counts, mus, nus = (
            _tree.leaves_like(api, spec, part, "state") for part in (state.count, state.mu, state.nu)
        )
        _tree.check_alike(api, updates, leaves, param_leaves, "parameter", required=decays)
        _tree.check_alike(api, updates, leaves, mus, "first moment", dtype=True)
        _tree.check_alike(api, updates, leaves, nus, "second moment", dtype=True)
        decayed = [decays] * len(leaves) if mask is None or not decays else mask_leaves(api, mask, params)
        present = [i for i, g in enumerate(leaves) if g is not None]
        scales = dict(zip(present, corrections([counts[i] for i in present])))
        steps, new_mu, new_nu = [], [], []
        for i, (g, p, m, v) in enumerate(zip(leaves, param_leaves, mus, nus)):
            step, m, v = (None, m, v) if g is None else leaf_step(g, p, m, v, *scales[i], decayed[i])
            steps.append(step)
            new_mu.append(m)
            new_nu.append(v)
        new_state = AdamState(
            _tree.advanced_counts(api, state.count, updates),
            _tree.unflatten(spec, new_mu),
            _tree.unflatten(spec, new_nu),
        )
        return _tree.unflatten(spec, steps), new_state

    return GradientTransformation(init_fn, update_fn)
