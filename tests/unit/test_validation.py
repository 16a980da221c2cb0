"""The input checks every store runs before touching its backend (``focal/validation.py``)."""

from __future__ import annotations

import math

import pytest

from focal.errors import InvalidDataError
from focal.validation import MAX_LIMIT, check_limit, check_min_score, check_vector, cosine_similarity

# --- check_limit ------------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "offset"), [(1, 0), (MAX_LIMIT, 0), (50, 10_000)])
def test_limits_within_bounds_pass(limit: int, offset: int) -> None:
    assert MAX_LIMIT == 1000
    check_limit(limit, offset)


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1])
def test_limit_outside_1_to_1000_is_invalid(limit: int) -> None:
    with pytest.raises(InvalidDataError, match=f"limit must be between 1 and 1000, got {limit}"):
        check_limit(limit)


def test_negative_offset_is_invalid() -> None:
    with pytest.raises(InvalidDataError, match="offset must be >= 0, got -1"):
        check_limit(10, -1)


# --- check_vector -----------------------------------------------------------------------------


def test_none_vector_passes() -> None:
    check_vector(None, 3)


@pytest.mark.parametrize("vector", [[1.0, 0.0, 0.0], [0.0, 0.0, -1e-12], (1, 2, 3)])
def test_finite_non_zero_vector_of_the_right_length_passes(vector: list[float]) -> None:
    check_vector(vector, 3)


@pytest.mark.parametrize("vector", [[], [1.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
def test_wrong_length_is_invalid_and_names_both_lengths(vector: list[float]) -> None:
    with pytest.raises(
        InvalidDataError, match=f"has {len(vector)} dimensions, the store is configured for 3"
    ):
        check_vector(vector, 3)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_invalid(bad: float) -> None:
    with pytest.raises(InvalidDataError, match="NaN or infinite"):
        check_vector([1.0, bad, 0.5], 3)


def test_all_zeros_is_invalid() -> None:
    with pytest.raises(InvalidDataError, match="all zeros"):
        check_vector([0.0, -0.0, 0.0], 3)


def test_error_names_what_was_checked() -> None:
    with pytest.raises(InvalidDataError, match=r"^query_embedding has 1 dimensions"):
        check_vector([1.0], 3, what="query_embedding")


# --- check_min_score --------------------------------------------------------------------------


@pytest.mark.parametrize("score", [-1.0, 0.0, 0.75, 1.0])
def test_min_score_in_cosine_range_passes(score: float) -> None:
    check_min_score(score)


@pytest.mark.parametrize("score", [-1.01, 1.0001, math.inf, math.nan])
def test_min_score_outside_cosine_range_is_invalid(score: float) -> None:
    with pytest.raises(InvalidDataError, match="min_score must be between -1 and 1"):
        check_min_score(score)


# --- cosine_similarity ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1.0, 0.0], [1.0, 0.0], 1.0),
        ([1.0, 0.0], [0.0, 1.0], 0.0),
        ([1.0, 0.0], [-1.0, 0.0], -1.0),
        ([1.0, 1.0], [1.0, 0.0], 1 / math.sqrt(2)),
        ([3.0, 4.0], [6.0, 8.0], 1.0),  # magnitude does not matter
    ],
)
def test_cosine_similarity_values(a: list[float], b: list[float], expected: float) -> None:
    assert cosine_similarity(a, b) == pytest.approx(expected, abs=1e-12)


def test_cosine_similarity_is_symmetric_and_bounded() -> None:
    a, b = [0.3, -1.2, 2.5, 0.01], [-0.7, 0.4, 1.1, 3.0]
    assert cosine_similarity(a, b) == pytest.approx(cosine_similarity(b, a))
    assert -1.0 <= cosine_similarity(a, b) <= 1.0


def test_cosine_similarity_refuses_vectors_of_different_lengths() -> None:
    with pytest.raises(ValueError):
        cosine_similarity([1.0, 0.0], [1.0, 0.0, 0.0])
