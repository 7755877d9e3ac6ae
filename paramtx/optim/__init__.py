"""``torch.optim`` shims with the rai-toolbox 0.2.1 API, built on paramtx's functional core.

Every class is a real ``torch.optim.Optimizer`` that keeps the name, the
signature, the defaults, the validation and the printed results of its
``rai_toolbox.optim`` twin: switching is a change of import. None holds
maths of its own: each applies the core's per-datum transforms (lifted by
the ``param_ndim`` rule of :func:`paramtx.to_batch`) around an inner
optimizer. :class:`GradientTransformationOptimizer` runs any
:class:`paramtx.GradientTransformation` the same way.

Example:
    >>> import torch
    >>> from paramtx.optim import L2ProjectedOptim
    >>> delta = torch.zeros(2, 3, requires_grad=True)        # 2 perturbations
    >>> opt = L2ProjectedOptim([delta], epsilon=1.0, lr=2.0)
    >>> delta.backward(gradient=torch.tensor([[-1.0, 0.0, 0.0], [0.0, 3.0, 4.0]]))
    >>> opt.step()
    >>> delta
    tensor([[ 1.0000,  0.0000,  0.0000],
            [ 0.0000, -0.6000, -0.8000]], requires_grad=True)
"""

from paramtx.optim.frank_wolfe import FrankWolfe, L1FrankWolfe, L1qFrankWolfe, L2FrankWolfe, LinfFrankWolfe
from paramtx.optim.generic import GradientTransformationOptimizer
from paramtx.optim.lp_space import (
    L1NormedGradientOptim,
    L1qNormedGradientOptim,
    L2NormedGradientOptim,
    L2ProjectedOptim,
    LinfProjectedOptim,
    SignedGradientOptim,
)
from paramtx.optim.misc import ClampedGradientOptimizer, ClampedParameterOptimizer, TopQGradientOptimizer
from paramtx.optim.optimizer import ChainedParamTransformingOptimizer, ParamTransformingOptimizer

__all__ = [
    # bases
    "ParamTransformingOptimizer",
    "ChainedParamTransformingOptimizer",
    # element-wise and top-q
    "ClampedGradientOptimizer",
    "ClampedParameterOptimizer",
    "TopQGradientOptimizer",
    # Lp space
    "SignedGradientOptim",
    "L1NormedGradientOptim",
    "L2NormedGradientOptim",
    "L1qNormedGradientOptim",
    "L2ProjectedOptim",
    "LinfProjectedOptim",
    # Frank-Wolfe
    "FrankWolfe",
    "L1FrankWolfe",
    "L1qFrankWolfe",
    "L2FrankWolfe",
    "LinfFrankWolfe",
    # any GradientTransformation
    "GradientTransformationOptimizer",
]
