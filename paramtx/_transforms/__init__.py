"""The transforms: one family per module, each op written once beside its maths."""
