"""The lift: runs a per-datum op on every datum of a tensor, pure or in place.

``param_ndim`` (the rule), ``ops`` (what an op declares), ``numerics`` (the
policy every op follows), ``dense`` (plain tensors, and the vmap reference),
``sharded`` (DTensors), ``lift`` (the entry points, dispatching between the two).
"""
