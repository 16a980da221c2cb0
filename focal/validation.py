"""Input checks every store runs before it touches its backend.

Shared by the in-memory references and the production backends, so a bad argument gets the same
``InvalidDataError`` everywhere and nothing is written. Store-specific checks live beside each
store (``focal/*/stores/*checks.py``) and build on these.

PostgreSQL refuses things Python happily holds: NUL characters in ``text`` and ``jsonb``, lone
surrogates (not encodable as UTF-8), naive timestamps are ambiguous for ``timestamptz`` and one
whose UTC instant falls outside Python's datetime range cannot be sent at all, ``integer`` stops
at 2**31 - 1, JSONB keeps only JSON and pgvector's ``vector`` holds float32. Checked here, they
are an ``InvalidDataError`` with a clear message instead of an ``OverflowError``,
``RecursionError``, ``PydanticSerializationError`` or driver error halfway through a write.

JSON values are limited to ``MAX_JSON_DEPTH`` levels of nesting: deeper values overflow Python's
recursion (``json.dumps``), pydantic's serialiser and its JSON parser (about 200 levels) at
different depths, so without one limit the backends would accept different values.

The in-memory references run the same checks and keep the same forms (``snapshot``,
``float32``), so a record reads back identically from every backend.
"""

from __future__ import annotations

import json
import math
import operator
import re
import struct
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticSerializationError

from focal.errors import InvalidDataError

MAX_LIMIT = 1000
MIN_INT4, MAX_INT4 = -(2**31), 2**31 - 1
# Lengths a vector must have to be scored alike everywhere (see ``checked_vector``).
MIN_VECTOR_NORM = 1e-15
MAX_VECTOR_NORM = 1e15
# Vector search scores are rounded to this many decimal places (see ``CosineScorer``).
SCORE_DECIMALS = 12

_Model = TypeVar("_Model", bound=BaseModel)
_Enum = TypeVar("_Enum", bound=Enum)
# NUL, or a UTF-16 surrogate code point (in a Python str it is always lone: pairs are decoded).
_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")
MAX_JSON_DEPTH = 100
_FLOAT32 = struct.Struct("<f")  # standard size: raises OverflowError instead of giving inf


def check_limit(limit: int, offset: int = 0) -> None:
    """``limit`` must be 1..1000 and ``offset`` >= 0."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidDataError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if offset < 0:
        raise InvalidDataError(f"offset must be >= 0, got {offset}")


def check_vector(vector: Sequence[float] | None, dimensions: int, *, what: str = "embedding") -> None:
    """``vector`` is ``None`` (no embedding) or passes ``checked_vector``."""
    if vector is not None:
        checked_vector(vector, dimensions, what=what)


def checked_vector(vector: Sequence[float], dimensions: int, *, what: str = "embedding") -> list[float]:
    """``vector`` rounded to float32, as pgvector stores it, after checking that every backend can
    score it: exactly ``dimensions`` finite values that fit a float32, and a length (Euclidean
    norm) between ``MIN_VECTOR_NORM`` and ``MAX_VECTOR_NORM``.

    The length bounds exist because pgvector computes cosine distance in float32: a vector like
    ``[1e-25, 0, ...]`` has a squared norm that underflows to 0 and scores NaN (which PostgreSQL
    sorts above every number, so it passed ``min_score`` and ranked first), and ``[1e20, 0, ...]``
    overflows to infinity and scores 0 against itself. Within the bounds, squared norms and dot
    products of two vectors stay in [1e-30, 1e30], far inside float32's normal range. A zero
    vector (also one that rounds to zero as float32) has no direction and is refused too.
    """
    if len(vector) != dimensions:
        raise InvalidDataError(
            f"{what} has {len(vector)} dimensions, the store is configured for {dimensions}"
        )
    if not all(map(math.isfinite, vector)):
        raise InvalidDataError(f"{what} contains NaN or infinite values")
    rounded = float32(vector)
    norm = math.hypot(*rounded)
    if norm == 0.0:
        raise InvalidDataError(f"{what} is all zeros (as float32); cosine similarity is undefined for it")
    if not MIN_VECTOR_NORM <= norm <= MAX_VECTOR_NORM:
        raise InvalidDataError(
            f"{what} has length {norm:.3g}; cosine scores need a length between {MIN_VECTOR_NORM:g} "
            f"and {MAX_VECTOR_NORM:g} (pgvector computes them in float32)"
        )
    return rounded


def check_min_score(min_score: float) -> None:
    """Cosine scores live in [-1, 1]; a threshold outside it is a mistake."""
    if not -1.0 <= min_score <= 1.0:
        raise InvalidDataError(f"min_score must be between -1 and 1, got {min_score}")


class CosineScorer:
    """The score of every vector search, on every backend: cosine similarity to ``query``.

    ``scorer(vector)`` is the cosine of the two vectors as given (stores pass them rounded to
    float32, as pgvector keeps them), computed in double precision with an exactly rounded dot
    product (``math.fsum``) and correctly rounded norms (``math.hypot``), then rounded to
    ``SCORE_DECIMALS`` decimal places. The rounding, far below any embedding model's precision,
    makes the value of the score a property of the two directions rather than of arithmetic
    noise: the same direction (a copy, a power-of-two multiple) scores exactly 1.0, orthogonal
    vectors exactly 0.0, and ``min_score=1.0`` admits exactly the rows pointing the same way.

    Backends rank by this score (descending, ties by id), never by pgvector's own ``<=>``, which
    accumulates in float32: it scores near-copies 1.0 and orders rows within ~1e-7 of each other
    arbitrarily. PostgreSQL uses ``<=>`` only to choose candidates (``focal.db.vector_ranking``).
    A zero vector (none passes ``checked_vector``) scores NaN, which no ``min_score`` admits.
    """

    __slots__ = ("_norm", "_query")

    def __init__(self, query: Sequence[float]) -> None:
        self._query = query
        self._norm = math.hypot(*query)

    def __call__(self, vector: Sequence[float]) -> float:
        if len(vector) != len(self._query):
            raise ValueError(f"vectors of different lengths: {len(self._query)} and {len(vector)}")
        norms = self._norm * math.hypot(*vector)
        if norms == 0.0:
            return math.nan
        score = round(math.fsum(map(operator.mul, self._query, vector)) / norms, SCORE_DECIMALS)
        return min(1.0, max(-1.0, score)) + 0.0  # + 0.0: no -0.0 in results


def cosine_similarity(a: Sequence[float], b: Sequence[float]) -> float:
    """The score of ``b`` for the query ``a`` (``CosineScorer``); NaN when either is zero."""
    return CosineScorer(a)(b)


def float32(values: Iterable[float]) -> list[float]:
    """``values`` rounded to float32 exactly as pgvector's ``vector`` stores them, so every backend
    returns the same embedding and computes the same scores; a value too large is refused."""
    items = list(values)
    # One pack/unpack of the whole vector: per-element calls cost ~0.5 ms on a 1536-d embedding.
    packing = struct.Struct(f"<{len(items)}f")  # standard size: OverflowError instead of inf
    try:
        return list(packing.unpack(packing.pack(*items)))
    except (OverflowError, struct.error):
        pass
    for value in items:  # name the value that does not fit
        try:
            _FLOAT32.pack(value)
        except (OverflowError, struct.error) as exc:
            raise InvalidDataError(f"embedding value {value!r} does not fit a float32") from exc
    raise AssertionError("unreachable: the whole vector failed to pack but every value packs")


def as_enum(enum_type: type[_Enum], value: Any, what: str) -> _Enum:
    """``value`` (a member or a member's value) as a member of ``enum_type``; anything else is
    ``InvalidDataError`` naming the allowed values."""
    try:
        return enum_type(value)
    except ValueError as exc:
        allowed = ", ".join(str(member.value) for member in enum_type)
        raise InvalidDataError(f"unknown {what} {value!r}; expected one of {allowed}") from exc


def check_aware(value: datetime | None, what: str) -> None:
    """Timestamps must carry a timezone (a naive one means a different instant on every server)
    and their UTC instant must exist: 0001-01-01 00:30+01:00 is 0000-12-31 in UTC, which neither
    Python nor the driver can represent."""
    if value is None:
        return
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidDataError(f"{what} must be timezone-aware (use datetime.now(UTC)), got {value!r}")
    try:
        value.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidDataError(
            f"{what} is out of range: {value.isoformat()} has no UTC equivalent between years 1 and 9999"
        ) from exc


def check_finite(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise InvalidDataError(f"{what} must be a finite number, got {value!r}")


def check_int4(value: int, what: str) -> None:
    """An integer for an ``integer`` column (or compared with one) must fit in 32 bits."""
    if not MIN_INT4 <= value <= MAX_INT4:
        raise InvalidDataError(f"{what} must fit in 32 bits, got {value}")


def check_text(value: Any, what: str) -> None:
    """No string in ``value`` (a string, or dicts/lists/tuples of them, keys included) holds a NUL
    character (PostgreSQL stores it in neither ``text`` nor ``jsonb``) or a lone surrogate such as
    ``"\\ud800"`` (not valid Unicode: it has no UTF-8 form, so no backend can store it)."""
    if isinstance(value, str):
        _check_string(value, what)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, what)
            check_text(item, what)
    elif isinstance(value, list | tuple):
        for item in value:
            check_text(item, what)


# The former name (NUL only); callers elsewhere still use it and get the surrogate check too.
check_no_nul = check_text


def json_text(value: Any, what: str = "value") -> str:
    """``value`` as JSON text for a ``jsonb`` column, or ``InvalidDataError``.

    Only JSON goes in: dicts with string keys, lists (tuples become lists), strings without NUL
    or lone surrogates, finite numbers, booleans and ``None``, nested at most ``MAX_JSON_DEPTH``
    levels. Anything else is refused, never mangled.

    Floats are written so that JSONB keeps them floats. JSONB stores numbers as ``numeric`` and
    prints them without exponent and with the scale they were written with: ``1e16`` comes back
    as ``10000000000000000``, which parses as an ``int`` (and ``1e300`` as ``10**300``). Written
    ``10000000000000000.0``, it comes back as written. No decoder can repair this on the way out
    (the text no longer says "float"), so the fix lives here, where every PostgreSQL store
    encodes its JSON. ``-0.0`` comes back as ``0.0`` (``numeric`` has no negative zero); it is
    equal to it.
    """
    parts: list[str] = []
    _encode_json(value, what, 0, parts)
    return "".join(parts)


# The former name of json_text (which then allowed NUL); kept for callers on other branches.
plain_json = json_text


def check_storable(model: BaseModel, what: str) -> None:
    """Refuse (``InvalidDataError``) a model no backend could store as it is.

    Every string (keys included) free of NUL and lone surrogates, every timestamp aware and
    representable in UTC, every float finite (JSON and JSONB have no NaN or infinity; pydantic
    would silently write ``null``), and nesting at most ``MAX_JSON_DEPTH`` levels (counted from
    the model's fields; nested models do not count). Walks the objects themselves rather than a
    dump, because dumping is what fails on such values (``PydanticSerializationError``)."""
    _check_model(model, what, 0)


def snapshot(model: _Model) -> _Model:
    """A deep, JSON-normalised copy: what a JSONB round trip would give back (tuples become lists,
    datetimes inside dicts become ISO strings). Call ``check_storable`` first: NaN inside JSON
    would become null here."""
    try:
        return type(model).model_validate_json(model.model_dump_json(warnings=False))
    except (PydanticValidationError, PydanticSerializationError) as exc:
        raise InvalidDataError(f"{type(model).__name__} does not survive a JSON round trip: {exc}") from exc


def _check_string(value: str, what: str) -> None:
    if value.isascii():
        if "\x00" in value:
            raise _nul_error(what)
        return
    bad = _UNSTORABLE_CHARACTER.search(value)
    if bad is None:
        return
    if bad.group() == "\x00":
        raise _nul_error(what)
    raise InvalidDataError(
        f"{what} contains a lone surrogate ({bad.group()!a}), which is not valid Unicode text"
    )


def _depth_error(what: str) -> InvalidDataError:
    return InvalidDataError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")


def _encode_json(value: Any, what: str, depth: int, parts: list[str]) -> None:
    """Append ``value``'s JSON text to ``parts`` (one pass: checks and encoding together)."""
    if value is None:
        parts.append("null")
    elif isinstance(value, str):
        _check_string(value, what)
        parts.append(json.dumps(value, ensure_ascii=False))
    elif value is True or value is False:
        parts.append("true" if value else "false")
    elif isinstance(value, int):
        try:
            parts.append(int.__repr__(value))
        except ValueError as exc:  # beyond sys.get_int_max_str_digits(): no reader could parse it
            raise InvalidDataError(f"{what} holds an integer too large for JSON") from exc
    elif isinstance(value, float):
        parts.append(_float_text(value, what))
    elif isinstance(value, dict):
        if depth >= MAX_JSON_DEPTH:
            raise _depth_error(what)
        parts.append("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise InvalidDataError(f"{what} is not plain JSON: object key {key!r} is not a string")
            _check_string(key, what)
            parts.append(", " if index else "")
            parts.append(json.dumps(key, ensure_ascii=False))
            parts.append(": ")
            _encode_json(item, what, depth + 1, parts)
        parts.append("}")
    elif isinstance(value, list | tuple):
        if depth >= MAX_JSON_DEPTH:
            raise _depth_error(what)
        parts.append("[")
        for index, item in enumerate(value):
            parts.append(", " if index else "")
            _encode_json(item, what, depth + 1, parts)
        parts.append("]")
    else:
        raise InvalidDataError(f"{what} is not plain JSON: {type(value).__name__} {value!r}")


def _float_text(value: float, what: str) -> str:
    """The shortest text that reads back as exactly ``value``, as a float, through JSONB."""
    if not math.isfinite(value):
        raise InvalidDataError(f"{what} is not plain JSON: {value!r} is not a finite number")
    text = float.__repr__(value)  # shortest round-trip form: "2.5", "1e+16", "1.5e-07"
    _, _, exponent = text.partition("e")
    if exponent and int(exponent) > 0:
        # numeric("1e+16") has scale 0 and prints as an integer: write it out with ".0".
        text = format(Decimal(text), "f") + ".0"
    return text


def _check_model(model: BaseModel, what: str, depth: int) -> None:
    for name in type(model).model_fields:
        _check_stored(getattr(model, name, None), f"{what}.{name}", depth)


def _check_stored(value: Any, what: str, depth: int) -> None:
    if isinstance(value, str):
        _check_string(value, what)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidDataError(f"{what} must hold finite numbers only, got {value!r}")
    elif isinstance(value, datetime):
        check_aware(value, what)
    elif isinstance(value, BaseModel):
        _check_model(value, what, depth)
    elif isinstance(value, dict):
        if depth >= MAX_JSON_DEPTH:
            raise _depth_error(what)
        for key, item in value.items():
            _check_stored(key, what, depth + 1)
            _check_stored(item, what, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        if depth >= MAX_JSON_DEPTH:
            raise _depth_error(what)
        if _finite_numbers(value):  # an embedding: its floats are checked in C, not one call each
            return
        for item in value:
            _check_stored(item, what, depth + 1)


def _finite_numbers(values: Iterable[Any]) -> bool:
    """True when every item is a finite number (the check ``_check_stored`` would make of each);
    False for anything else (a string, a datetime, a nested container, NaN), which then gets the
    item-by-item walk and its precise error. ~20x faster on a 1536-d embedding, which every turn
    checks several times (``check_episode``)."""
    try:
        return all(map(math.isfinite, values))
    except (TypeError, ValueError, OverflowError):  # not a number, or an int beyond float range
        return False


def _nul_error(what: str) -> InvalidDataError:
    return InvalidDataError(f"{what} contains a NUL character (\\x00), which PostgreSQL cannot store")
