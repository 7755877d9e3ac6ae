"""The core layer: transform types and combinators, pytree plumbing, argument checks."""
