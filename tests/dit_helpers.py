"""Helpers shared by the DiT tests."""


def rel_l2(a, b):
    """``|a - b| / |b|`` over all elements, in float64."""
    return ((a.double() - b.double()).norm() / b.double().norm()).item()
