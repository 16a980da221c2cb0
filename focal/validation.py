"""Input checks every store runs before it touches its backend.

Shared by the in-memory references and the production backends, so a bad argument gets the same
``InvalidDataError`` everywhere and nothing is written. Store-specific checks live beside each
store (``focal/*/stores/*checks.py``) and build on these.

PostgreSQL refuses things Python happily holds: NUL characters in ``text`` and ``jsonb``, naive
timestamps are ambiguous for ``timestamptz``, ``integer`` stops at 2**31 - 1, JSONB keeps only
JSON and pgvector's ``vector`` holds float32. The in-memory references run the same checks and
keep the same forms (``snapshot``, ``float32``), so a record reads back identically from every
backend.
"""

from __future__ import annotations

import json
import math
import operator
import re
import struct
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

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
# A JSON-escaped NUL that is not itself an escaped backslash followed by "u0000".
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
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
    """Timestamps must carry a timezone: a naive one means a different instant on every server."""
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise InvalidDataError(f"{what} must be timezone-aware (use datetime.now(UTC)), got {value!r}")


def check_finite(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise InvalidDataError(f"{what} must be a finite number, got {value!r}")


def check_int4(value: int, what: str) -> None:
    """An integer for an ``integer`` column (or compared with one) must fit in 32 bits."""
    if not MIN_INT4 <= value <= MAX_INT4:
        raise InvalidDataError(f"{what} must fit in 32 bits, got {value}")


def check_no_nul(value: Any, what: str) -> None:
    """No string in ``value`` (a string, or dicts/lists/tuples of them, keys included) holds a NUL
    character, which PostgreSQL can store in neither ``text`` nor ``jsonb``."""
    if isinstance(value, str):
        if "\x00" in value:
            raise _nul_error(what)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_no_nul(key, what)
            check_no_nul(item, what)
    elif isinstance(value, list | tuple):
        for item in value:
            check_no_nul(item, what)


def plain_json(value: Any, what: str) -> str:
    """``value`` as JSON text, refusing NaN, infinities and objects JSON cannot hold (never mangled)."""
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidDataError(f"{what} is not plain JSON: {exc}") from exc


def json_text(value: Any, what: str = "value") -> str:
    """``value`` as JSON text for a ``jsonb`` column: plain JSON (``plain_json``) without NUL."""
    return _refuse_escaped_nul(plain_json(value, what), what)


def check_storable(model: BaseModel, what: str) -> str:
    """The model's JSON form, refused (``InvalidDataError``) if any string holds a NUL character."""
    # warnings=False: a model built with model_copy(update=...) may hold values its JSON types do
    # not describe (a datetime in a JSON dict); they serialise fine and the check below still runs.
    return _refuse_escaped_nul(model.model_dump_json(warnings=False), what)


def snapshot(model: _Model) -> _Model:
    """A deep, JSON-normalised copy: what a JSONB round trip would give back (tuples become lists,
    datetimes inside dicts become ISO strings, NaN inside JSON becomes null)."""
    try:
        return type(model).model_validate_json(model.model_dump_json(warnings=False))
    except PydanticValidationError as exc:
        raise InvalidDataError(f"{type(model).__name__} does not survive a JSON round trip: {exc}") from exc


def _refuse_escaped_nul(text: str, what: str) -> str:
    if _ESCAPED_NUL.search(text):
        raise _nul_error(what)
    return text


def _nul_error(what: str) -> InvalidDataError:
    return InvalidDataError(f"{what} contains a NUL character (\\x00), which PostgreSQL cannot store")
