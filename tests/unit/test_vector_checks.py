"""``checked_vector``: the vectors every backend can score alike (and the ones it refuses)."""

from __future__ import annotations

import pytest

from focal.errors import InvalidDataError
from focal.validation import MAX_VECTOR_NORM, MIN_VECTOR_NORM, checked_vector


def test_vector_is_returned_rounded_to_float32() -> None:
    assert checked_vector([0.1, 0.5, -2.0], 3) == [pytest.approx(0.1, rel=1e-7), 0.5, -2.0]
    assert checked_vector([0.1, 0.5, -2.0], 3)[0] != 0.1  # 0.1 has no exact float32 form


@pytest.mark.parametrize("norm", [MIN_VECTOR_NORM, 1.0, MAX_VECTOR_NORM / 2])
def test_lengths_within_the_bounds_pass(norm: float) -> None:
    checked_vector([norm, 0.0], 2)
    checked_vector([0.0, -norm], 2)


@pytest.mark.parametrize(
    "vector",
    [
        [1e-25, 0.0],  # squared norm underflows float32: pgvector scores NaN
        [MIN_VECTOR_NORM / 2, 0.0],
        [1e-20, 1e-20],  # squares are float32 subnormals: imprecise scores
        [1e20, 1.0],  # fits a float32, but its square overflows one
        [MAX_VECTOR_NORM * 2, 0.0],
    ],
)
def test_lengths_outside_the_bounds_are_invalid(vector: list[float]) -> None:
    with pytest.raises(InvalidDataError, match="length"):
        checked_vector(vector, 2)


def test_vector_that_rounds_to_zero_as_float32_is_all_zeros() -> None:
    with pytest.raises(InvalidDataError, match="all zeros"):
        checked_vector([1e-50, -1e-50], 2)
