"""paramtx.perturbations: rai-toolbox's ``rai_toolbox.perturbations`` names.

Random starts that overwrite a tensor in place with a uniform draw from an Lp
ball (their maths are paramtx's pure samplers, :func:`paramtx.sample_l2_ball`, ...).
The attack loop :func:`gradient_ascent` (random restarts run as one batch),
:func:`random_restart`, and the perturbation models it solves for.
"""

from paramtx.perturbations.attack import gradient_ascent, random_restart
from paramtx.perturbations.init import (
    uniform_like_l1_n_ball_,
    uniform_like_l2_n_ball_,
    uniform_like_linf_n_ball_,
)
from paramtx.perturbations.models import AdditivePerturbation, PerturbationModel

__all__ = [
    "gradient_ascent",
    "random_restart",
    "AdditivePerturbation",
    "PerturbationModel",
    "uniform_like_l1_n_ball_",
    "uniform_like_l2_n_ball_",
    "uniform_like_linf_n_ball_",
]
