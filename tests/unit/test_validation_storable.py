"""The generic "can PostgreSQL store this" checks of ``focal/validation.py`` (every store uses them)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import pytest
from pydantic import BaseModel

from focal.errors import InvalidDataError
from focal.validation import (
    MAX_INT4,
    MIN_INT4,
    as_enum,
    check_aware,
    check_finite,
    check_int4,
    check_no_nul,
    check_storable,
    float32,
    json_text,
    plain_json,
    snapshot,
)


class _Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class _Note(BaseModel):
    text: str
    data: dict[str, Any] = {}


# --- float32 ----------------------------------------------------------------------------------


def test_float32_rounds_like_pgvector() -> None:
    assert float32([0.5, -2.0]) == [0.5, -2.0]
    assert float32([0.1]) != [0.1]  # 0.1 has no exact float32 form
    assert float32([0.1]) == pytest.approx([0.1], rel=1e-7)
    assert float32([1e-50]) == [0.0]  # underflows to zero (callers that need non-zero check after)


@pytest.mark.parametrize("too_large", [1e39, -3.5e38])
def test_float32_refuses_values_beyond_its_range(too_large: float) -> None:
    with pytest.raises(InvalidDataError, match="does not fit a float32"):
        float32([1.0, too_large])


# --- check_aware, check_finite, check_int4 -----------------------------------------------------


@pytest.mark.parametrize(
    "value", [None, datetime.now(UTC), datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))]
)
def test_aware_or_missing_timestamps_pass(value: datetime | None) -> None:
    check_aware(value, "created_at")


def test_naive_timestamp_is_refused_and_named() -> None:
    with pytest.raises(InvalidDataError, match=r"^created_at must be timezone-aware"):
        check_aware(datetime(2026, 1, 1), "created_at")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_number_is_refused(bad: float) -> None:
    check_finite(0.25, "score")
    with pytest.raises(InvalidDataError, match=r"^score must be a finite number"):
        check_finite(bad, "score")


def test_int4_bounds_are_postgresql_integer() -> None:
    check_int4(MIN_INT4, "version")
    check_int4(MAX_INT4, "version")
    for outside in (MIN_INT4 - 1, MAX_INT4 + 1):
        with pytest.raises(InvalidDataError, match=r"^version must fit in 32 bits"):
            check_int4(outside, "version")


# --- NUL characters and JSON ------------------------------------------------------------------


@pytest.mark.parametrize("clean", [None, "", "plain", {"k": ["v", ("w", 1)]}, 3])
def test_values_without_nul_pass(clean: Any) -> None:
    check_no_nul(clean, "name")


@pytest.mark.parametrize("bad", ["a\x00b", {"k\x00": "v"}, {"k": ["ok", {"deep": "\x00"}]}, ("x", "\x00")])
def test_nul_anywhere_is_refused(bad: Any) -> None:
    with pytest.raises(InvalidDataError, match=r"^name contains a NUL character"):
        check_no_nul(bad, "name")


@pytest.mark.parametrize("bad", [{"x": math.nan}, {"x": math.inf}, {"x": object()}, {"x": {1, 2}}])
def test_plain_json_refuses_what_json_cannot_hold(bad: Any) -> None:
    with pytest.raises(InvalidDataError, match=r"^metadata is not plain JSON"):
        plain_json(bad, "metadata")


def test_json_text_keeps_unicode_and_refuses_nul() -> None:
    assert json_text({"k": "é", "n": [1, 2.5]}) == '{"k": "é", "n": [1, 2.5]}'
    with pytest.raises(InvalidDataError, match="NUL"):
        json_text({"k": "a\x00"})
    with pytest.raises(InvalidDataError, match="NUL"):
        json_text({"a\x00": 1})


def test_a_literal_backslash_u0000_is_text_not_nul() -> None:
    # Six ordinary characters: PostgreSQL stores them (as text and inside jsonb) without complaint.
    assert json_text({"k": "\\u0000"}) == '{"k": "\\\\u0000"}'
    assert '"\\\\u0000"' in check_storable(_Note(text="\\u0000"), "note")


def test_check_storable_refuses_nul_in_any_string_of_the_model() -> None:
    assert check_storable(_Note(text="ok", data={"k": "v"}), "note") == '{"text":"ok","data":{"k":"v"}}'
    for bad in (_Note(text="a\x00"), _Note(text="ok", data={"k": ["\x00"]})):
        with pytest.raises(InvalidDataError, match=r"^note contains a NUL character"):
            check_storable(bad, "note")


def test_snapshot_is_a_json_round_trip_copy() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    original = _Note(text="t", data={"pair": (1, 2), "when": when})
    copy = snapshot(original)
    assert copy == _Note(text="t", data={"pair": [1, 2], "when": when.isoformat().replace("+00:00", "Z")})
    assert copy is not original


# --- as_enum ----------------------------------------------------------------------------------


def test_as_enum_takes_a_member_or_its_value() -> None:
    assert as_enum(_Colour, _Colour.RED, "colour") is _Colour.RED
    assert as_enum(_Colour, "blue", "colour") is _Colour.BLUE


@pytest.mark.parametrize("bad", ["green", "RED", None, 3])
def test_as_enum_refuses_anything_else_naming_the_allowed_values(bad: Any) -> None:
    with pytest.raises(InvalidDataError, match=r"^unknown colour .*; expected one of red, blue$"):
        as_enum(_Colour, bad, "colour")
