"""Input checks and JSON snapshots shared by the audit and profile stores (every backend).

PostgreSQL refuses things Python happily holds: NUL characters in ``text`` and ``jsonb``,
naive timestamps are ambiguous for ``timestamptz``, ``integer`` stops at 2**31 - 1, and JSONB
keeps only JSON. The in-memory references run the same checks and keep the same JSON form
(``snapshot``), so a record reads back identically from every backend and bad input raises the
same ``InvalidDataError`` everywhere before anything is written.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from focal.errors import InvalidDataError

__all__ = ["MAX_INT4", "check_aware", "check_finite", "check_int4", "check_storable", "snapshot"]

MAX_INT4 = 2**31 - 1
_Model = TypeVar("_Model", bound=BaseModel)
# A JSON-escaped NUL that is not itself an escaped backslash followed by "u0000".
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def check_aware(value: datetime | None, what: str) -> None:
    """Timestamps must carry a timezone: a naive one means a different instant on every server."""
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise InvalidDataError(f"{what} must be timezone-aware (use datetime.now(UTC)), got {value!r}")


def check_finite(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise InvalidDataError(f"{what} must be a finite number, got {value!r}")


def check_int4(value: int, what: str) -> None:
    if not -MAX_INT4 - 1 <= value <= MAX_INT4:
        raise InvalidDataError(f"{what} must fit in 32 bits, got {value}")


def check_storable(model: BaseModel, what: str) -> str:
    """The model's JSON form, refused (``InvalidDataError``) if any string holds a NUL character,
    which PostgreSQL can store in neither ``text`` nor ``jsonb``."""
    # warnings=False: a model built with model_copy(update=...) may hold values its JSON types do
    # not describe (a datetime in a JSON dict); they serialise fine and the check below still runs.
    text = model.model_dump_json(warnings=False)
    if _ESCAPED_NUL.search(text):
        raise InvalidDataError(f"{what} contains a NUL character (\\x00), which cannot be stored")
    return text


def snapshot(model: _Model) -> _Model:
    """A deep, JSON-normalised copy: what a JSONB round trip would give back (tuples become lists,
    datetimes inside dicts become ISO strings, NaN inside JSON becomes null)."""
    try:
        return type(model).model_validate_json(model.model_dump_json(warnings=False))
    except PydanticValidationError as exc:
        raise InvalidDataError(f"{type(model).__name__} does not survive a JSON round trip: {exc}") from exc
