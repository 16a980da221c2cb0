"""The generic "can PostgreSQL store this" checks of ``focal/validation.py`` (every store uses them)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import pytest
from pydantic import BaseModel

from focal.errors import InvalidDataError
from focal.validation import (
    MAX_INT4,
    MAX_JSON_DEPTH,
    MIN_INT4,
    as_enum,
    check_aware,
    check_finite,
    check_int4,
    check_no_nul,
    check_storable,
    check_text,
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


@pytest.mark.parametrize(
    "bad",
    [
        datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
        datetime(9999, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1))),
    ],
)
def test_timestamp_without_a_utc_instant_is_refused_not_an_overflow(bad: datetime) -> None:
    with pytest.raises(InvalidDataError, match=r"^created_at is out of range"):
        check_aware(bad, "created_at")
    check_aware(datetime(1, 1, 1, tzinfo=UTC), "created_at")  # the edges themselves are fine
    check_aware(datetime(9999, 12, 31, 23, 59, tzinfo=UTC), "created_at")


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


# --- NUL characters, lone surrogates and JSON -------------------------------------------------


@pytest.mark.parametrize("clean", [None, "", "plain", "Zoë 😀", {"k": ["v", ("w", 1)]}, 3])
def test_storable_text_passes(clean: Any) -> None:
    check_text(clean, "name")


@pytest.mark.parametrize("bad", ["a\x00b", {"k\x00": "v"}, {"k": ["ok", {"deep": "\x00"}]}, ("x", "\x00")])
def test_nul_anywhere_is_refused(bad: Any) -> None:
    with pytest.raises(InvalidDataError, match=r"^name contains a NUL character"):
        check_text(bad, "name")


@pytest.mark.parametrize("bad", ["\ud800", "é\udfff", {"\ud83d": 1}, ["ok", "x\ud800y"]])
def test_lone_surrogates_anywhere_are_refused(bad: Any) -> None:
    with pytest.raises(
        InvalidDataError, match=r"^name contains a lone surrogate \('\\ud[89a-f][0-9a-f]{2}'\)"
    ):
        check_text(bad, "name")


def test_check_no_nul_is_check_text() -> None:
    assert check_no_nul is check_text  # callers of the former name get the surrogate check too


@pytest.mark.parametrize(
    "bad",
    [{"x": math.nan}, {"x": math.inf}, {"x": -math.inf}, {"x": object()}, {"x": {1, 2}}, {1: "x"}],
)
def test_json_text_refuses_what_json_cannot_hold(bad: Any) -> None:
    with pytest.raises(InvalidDataError, match=r"^metadata is not plain JSON"):
        json_text(bad, "metadata")


def test_plain_json_is_json_text() -> None:
    assert plain_json is json_text


def test_json_text_keeps_unicode_and_refuses_nul_and_surrogates() -> None:
    assert (
        json_text({"k": "é", "n": [1, 2.5], "t": (True, None)})
        == '{"k": "é", "n": [1, 2.5], "t": [true, null]}'
    )
    for bad in ({"k": "a\x00"}, {"a\x00": 1}):
        with pytest.raises(InvalidDataError, match="NUL"):
            json_text(bad)
    for bad in ({"k": "a\ud800"}, {"\udc00": 1}):
        with pytest.raises(InvalidDataError, match="lone surrogate"):
            json_text(bad)


def test_a_literal_backslash_u0000_is_text_not_nul() -> None:
    # Six ordinary characters: PostgreSQL stores them (as text and inside jsonb) without complaint.
    assert json_text({"k": "\\u0000"}) == '{"k": "\\\\u0000"}'
    check_storable(_Note(text="\\u0000", data={"k": "\\u0000"}), "note")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e16, "10000000000000000.0"),  # JSONB would print 1e+16 as 10000000000000000 (an int)
        (-1.5e17, "-150000000000000000.0"),
        (1e300, "1" + "0" * 300 + ".0"),
        (1.7976931348623157e308, "17976931348623157" + "0" * 292 + ".0"),
        (1.0, "1.0"),
        (0.1, "0.1"),
        (1e15, "1000000000000000.0"),
        (1.5e-7, "1.5e-07"),  # a negative exponent keeps its scale in numeric: stays a float
        (5e-324, "5e-324"),
        (10**16, "10000000000000000"),
        (10**30, "1" + "0" * 30),
        (True, "true"),
    ],
)
def test_json_text_writes_numbers_that_read_back_with_their_type(value: Any, text: str) -> None:
    assert json_text(value) == text
    parsed = json.loads(text)
    assert parsed == value and type(parsed) is type(value)


def test_json_text_refuses_an_integer_no_reader_could_parse() -> None:
    with pytest.raises(InvalidDataError, match="integer too large"):
        json_text({"n": 10**5000})


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_json_nesting_is_limited_to_max_json_depth() -> None:
    assert json.loads(json_text(_nested(MAX_JSON_DEPTH))) == _nested(MAX_JSON_DEPTH)
    check_storable(_Note(text="t", data={"k": _nested(MAX_JSON_DEPTH - 1)}), "note")
    for too_deep in (MAX_JSON_DEPTH + 1, 2000):  # 2000 overflows json.dumps and pydantic's serialiser
        with pytest.raises(
            InvalidDataError, match=rf"^metadata is nested deeper than {MAX_JSON_DEPTH} levels"
        ):
            json_text(_nested(too_deep), "metadata")
        with pytest.raises(InvalidDataError, match=rf"^note.data is nested deeper than {MAX_JSON_DEPTH}"):
            check_storable(_Note.model_construct(text="t", data={"k": _nested(too_deep)}), "note")


def test_check_storable_walks_every_string_of_the_model() -> None:
    check_storable(_Note(text="ok", data={"k": "v"}), "note")
    for bad in (
        _Note(text="a\x00"),
        _Note(text="ok", data={"k": ["\x00"]}),
        _Note(text="ok", data={"\x00": 1}),
    ):
        with pytest.raises(InvalidDataError, match=r"^note\.(text|data) contains a NUL character"):
            check_storable(bad, "note")
    for bad in (_Note.model_construct(text="\ud800", data={}), _Note(text="ok", data={"k": ["\udfff"]})):
        with pytest.raises(InvalidDataError, match=r"^note\.(text|data) contains a lone surrogate"):
            check_storable(bad, "note")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_check_storable_refuses_non_finite_numbers_even_where_pydantic_would_write_null(bad: float) -> None:
    with pytest.raises(InvalidDataError, match=r"^note.data must hold finite numbers only"):
        check_storable(_Note(text="t", data={"x": [1, bad]}), "note")


def test_check_storable_finds_the_one_bad_item_of_a_long_list_of_numbers() -> None:
    # Lists of finite numbers (embeddings) take a fast path; one item that is not, anywhere,
    # still gets the item-by-item check and its error.
    numbers: list[Any] = [0.5] * 1535 + [2]
    check_storable(_Note(text="t", data={"v": numbers}), "note")
    for bad, error in (
        (math.nan, "must hold finite numbers only"),
        (-math.inf, "must hold finite numbers only"),
        ("\x00", "contains a NUL character"),
        ({"k": "\ud800"}, "contains a lone surrogate"),
        (datetime(2026, 1, 1), "must be timezone-aware"),
    ):
        with pytest.raises(InvalidDataError, match=rf"^note.data {error}"):
            check_storable(_Note.model_construct(text="t", data={"v": [*numbers, bad, 1.0]}), "note")


class _Stamped(BaseModel):
    at: datetime
    nested: _Note | None = None


@pytest.mark.parametrize(
    "bad",
    [
        datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),  # 0000-12-31 in UTC
        datetime(9999, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1))),  # year 10000 in UTC
        datetime(2026, 1, 1),  # naive
    ],
)
def test_check_storable_refuses_timestamps_without_a_utc_instant(bad: datetime) -> None:
    with pytest.raises(InvalidDataError, match=r"^stamp.at (is out of range|must be timezone-aware)"):
        check_storable(_Stamped(at=bad), "stamp")


def test_check_storable_looks_inside_nested_models() -> None:
    with pytest.raises(InvalidDataError, match=r"^stamp.nested.text contains a NUL"):
        check_storable(_Stamped(at=datetime.now(UTC), nested=_Note(text="\x00")), "stamp")


def test_snapshot_is_a_json_round_trip_copy() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    original = _Note(text="t", data={"pair": (1, 2), "when": when, "big": 1e16})
    copy = snapshot(original)
    assert copy == _Note(
        text="t", data={"pair": [1, 2], "when": when.isoformat().replace("+00:00", "Z"), "big": 1e16}
    )
    assert type(copy.data["big"]) is float
    assert copy is not original


# --- as_enum ----------------------------------------------------------------------------------


def test_as_enum_takes_a_member_or_its_value() -> None:
    assert as_enum(_Colour, _Colour.RED, "colour") is _Colour.RED
    assert as_enum(_Colour, "blue", "colour") is _Colour.BLUE


@pytest.mark.parametrize("bad", ["green", "RED", None, 3])
def test_as_enum_refuses_anything_else_naming_the_allowed_values(bad: Any) -> None:
    with pytest.raises(InvalidDataError, match=r"^unknown colour .*; expected one of red, blue$"):
        as_enum(_Colour, bad, "colour")
