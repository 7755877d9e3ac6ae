"""The perturbed optimizers: differentiable Monte-Carlo smoothing of solvers, and the Fenchel-Young loss."""
