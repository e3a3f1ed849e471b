"""All-pairs (pairwise) combinations: a few cases in which every pair of values of any two
factors appears at least once, instead of the full Cartesian product.

Most bugs of a configuration matrix need two factors to meet (this objective with that tower
preset, that preset with this data format); a pairwise set finds those with far fewer runs: for
factors of 5, 3 and 5 values, 25 cases instead of 75. Greedy and deterministic (the same cases
every run): each new case is the candidate covering the most pairs not yet covered, the first
such in product order.

    from tests.pairwise import pairwise
    @pytest.mark.parametrize("objective, preset", pairwise({"objective": OBJECTIVES, "preset": PRESETS}))
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence


def uncovered_pairs(factors: Mapping[str, Sequence], cases: Sequence[tuple]) -> set[tuple]:
    """The pairs ``(i, value_i, j, value_j)`` (factor ``i`` < factor ``j``) that no case holds."""
    values = list(factors.values())
    want = {
        (i, a, j, b) for i, j in itertools.combinations(range(len(values)), 2) for a in values[i] for b in values[j]
    }
    have = {(i, c[i], j, c[j]) for c in cases for i, j in itertools.combinations(range(len(values)), 2)}
    return want - have


def pairwise(factors: Mapping[str, Sequence]) -> list[tuple]:
    """Cases (tuples in the order of ``factors``) covering every pair of values of any two factors.
    One factor: its values; no factor: one empty case."""
    values = [list(v) for v in factors.values()]
    if any(not v for v in values):
        raise ValueError(f"a factor without values: {[k for k, v in factors.items() if not v]}")
    if len(values) < 2:
        return [tuple(c) for c in itertools.product(*values)]
    left = uncovered_pairs(factors, [])
    pairs = list(itertools.combinations(range(len(values)), 2))
    cases: list[tuple] = []
    while left:
        best = max(
            itertools.product(*values),
            key=lambda c: sum((i, c[i], j, c[j]) in left for i, j in pairs),
        )
        cases.append(best)
        left -= {(i, best[i], j, best[j]) for i, j in pairs}
    return cases
