"""Reading a comparison against its seed spread. Explained in notebook 05, §What matters: the ablations.

A difference between two arms is a finding at a given scale only when it survives the variation between
seeds: here, when every seed of one arm beats (or trails) every seed of the other.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["seed_verdict"]


def seed_verdict(a: Sequence[float], b: Sequence[float]) -> str:
    """``"higher"`` / ``"lower"`` when every seed of ``a`` beats / trails every seed of ``b``, else
    ``"within the seed spread"``. Each arm needs at least three seeds."""
    for name, arm in (("a", a), ("b", b)):
        if len(arm) < 3:
            raise ValueError(f"{name}: {len(arm)} seed(s); a verdict needs at least 3 per arm")
    if min(a) > max(b):
        return "higher"
    if max(a) < min(b):
        return "lower"
    return "within the seed spread"
