"""The all-pairs generator the configuration matrices use (`tests.pairwise`)."""

import itertools

import pytest

from tests.pairwise import pairwise, uncovered_pairs

FACTORS = [
    {"objective": ["infonce", "triplet", "covlr", "relation_kd", "sad"], "preset": ["tiny", "vit_bert", "clip"]},
    {"a": [1, 2, 3, 4, 5], "b": "xyz", "c": ["p", "q", "r", "s", "t"]},
    {"a": [0, 1], "b": [0, 1], "c": [0, 1], "d": [0, 1], "e": [0, 1]},
    {"mode": list(range(9)), "preset": ["tiny", "vit_bert", "clip", "open_clip"]},
]


@pytest.mark.parametrize("factors", FACTORS, ids=lambda f: "x".join(str(len(v)) for v in f.values()))
def test_every_pair_of_values_appears_in_some_case(factors):
    cases = pairwise(factors)
    names = list(factors)
    for case in cases:  # each case takes one value of each factor
        assert len(case) == len(names) and all(v in factors[n] for n, v in zip(names, case, strict=True))
    for (i, x), (j, y) in itertools.combinations(enumerate(names), 2):  # brute force, not the helper's own check
        for a, b in itertools.product(factors[x], factors[y]):
            assert any(c[i] == a and c[j] == b for c in cases), (x, a, y, b)
    assert uncovered_pairs(factors, cases) == set()
    full = len(list(itertools.product(*factors.values())))
    largest_two = sorted(len(v) for v in factors.values())[-2:]
    assert largest_two[0] * largest_two[1] <= len(cases) <= full  # no case set can be smaller than that
    assert pairwise(factors) == cases  # the same cases every time


def test_fewer_cases_than_the_product():
    cases = pairwise({"a": range(5), "b": range(3), "c": range(5)})
    assert len(cases) <= 30 < 75
    assert len(pairwise({"a": [0, 1]} | {k: [0, 1] for k in "bcdefg"})) <= 8 < 2**7


def test_uncovered_pairs_names_what_is_missing():
    assert uncovered_pairs({"a": [1, 2], "b": "xy"}, [(1, "x"), (2, "y")]) == {(0, 1, 1, "y"), (0, 2, 1, "x")}


def test_degenerate_factors():
    assert pairwise({"a": [1, 2, 3]}) == [(1,), (2,), (3,)]
    with pytest.raises(ValueError, match=r"a factor without values: \['b'\]"):
        pairwise({"a": [1], "b": []})
