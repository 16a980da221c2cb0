"""What a turn keeps of a tool call: values any store can hold, cut to a size.

Tool servers answer whatever they like: JSON with NaN, ``"\\u0000"`` or lone surrogates, nesting
hundreds of levels deep, megabytes of text. None of that may refuse the turn after the call was
made (a tool failure never fails the turn), so what is recorded (``TurnRecord.tools_executed``,
audit events) and captured (session variables) goes through ``storable`` first: strings lose NUL
and lone surrogates (replaced by U+FFFD), non-finite numbers become null, nesting deeper than
``MAX_DEPTH`` becomes the text ``"[nested too deeply]"``. ``capped`` then bounds the size: a value
whose JSON is larger than the limit is replaced by ``{"truncated": true, "bytes": n, "preview":
"<first bytes of its JSON>"}``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["MAX_DEPTH", "capped", "storable"]

MAX_DEPTH = 32
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _text(value: str) -> str:
    return value if value.isascii() and "\x00" not in value else _UNSTORABLE.sub("\ufffd", value)


def storable(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON every store keeps (see the module docstring)."""
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_DEPTH and isinstance(value, dict | list | tuple):
        return "[nested too deeply]"
    if isinstance(value, dict):
        return {_text(str(key)): storable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item, depth + 1) for item in value]
    return _text(str(value))


def capped(value: Any, limit: int) -> Any:
    """``storable(value)``, or a preview of it when its JSON is longer than ``limit`` bytes."""
    clean = storable(value)
    try:
        encoded = json.dumps(clean, ensure_ascii=False)
    except ValueError:  # an integer too long for str(): keep its place, not its digits
        return {"truncated": True, "bytes": None, "preview": "[unprintable number]"}
    size = len(encoded.encode("utf-8"))
    if size <= limit:
        return clean
    preview = encoded.encode("utf-8")[: max(0, limit - 64)].decode("utf-8", errors="ignore")
    return {"truncated": True, "bytes": size, "preview": preview}
