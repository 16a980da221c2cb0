"""Optimistic concurrency over HTTP for the config routes: revisions as ETags, ``If-Match``, and
PATCH as a read-modify-write that never loses a concurrent change.

- Every config object (agent, rule, scenario, template, variable, tool activation) has a
  ``revision`` kept by the store. GET, POST and PATCH return it in the body and as a strong
  ``ETag: "<revision>"``.
- ``PATCH`` with ``If-Match: "<revision>"`` (several tags or ``*`` allowed) applies only if the
  object is still at that revision when it is written (the store's conditional save makes the
  check atomic with the write); otherwise ``412 precondition_failed``, with the current ``ETag``,
  and nothing changes.
- ``PATCH`` without ``If-Match`` reads the object, applies the fields sent and saves on condition
  that the revision it read is still the stored one; when another write came in between, it
  reads again and re-applies, up to ``MAX_PATCH_ATTEMPTS`` times (then ``409``). So two PATCHes of
  different fields both land, whatever their timing, and one never undoes the other.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Protocol, TypeVar

from fastapi import Header, Response
from starlette.exceptions import HTTPException

from focal.errors import ConflictError, StaleRevisionError

__all__ = ["MAX_PATCH_ATTEMPTS", "IfMatchHeader", "etag", "read_modify_write", "with_etag"]

MAX_PATCH_ATTEMPTS = 10
"""Attempts of a PATCH without ``If-Match``. Each round of conflicting writers lets at least one
of them commit, so up to this many concurrent PATCHes of one object all succeed."""

IfMatchHeader = Annotated[
    str | None,
    Header(
        description='Apply only if the object is at this revision, as returned in its ETag (e.g. "3"); '
        "412 otherwise. Without it, concurrent PATCHes are merged field by field."
    ),
]

_ENTITY_TAG = re.compile(r'\s*(W/)?"([^"]*)"\s*(?:,|$)')


class _Revisioned(Protocol):
    @property
    def revision(self) -> int: ...


R = TypeVar("R", bound=_Revisioned)


def etag(revision: int) -> str:
    """The strong entity tag of a revision."""
    return f'"{revision}"'


def with_etag(response: Response, model: R) -> R:
    """``model``, after setting ``response``'s ``ETag`` to its revision."""
    response.headers["ETag"] = etag(model.revision)
    return model


def _matching_revisions(if_match: str) -> set[str] | None:
    """The tags an ``If-Match`` value admits (None: ``*``, any). Weak tags never match (RFC 9110
    compares strongly for If-Match); a value that is not a list of tags admits nothing."""
    if if_match.strip() == "*":
        return None
    tags: set[str] = set()
    position = 0
    while position < len(if_match):
        found = _ENTITY_TAG.match(if_match, position)
        if found is None or found.end() == position:
            return set()
        if found.group(1) is None:
            tags.add(found.group(2))
        position = found.end()
    return tags


def _precondition_failed(what: str, revision: int, if_match: str) -> HTTPException:
    return HTTPException(
        status_code=412,
        detail=f"{what} is at revision {revision} ({etag(revision)}), which If-Match {if_match!r} "
        "does not admit: read it again and reapply your change",
        headers={"ETag": etag(revision)},
    )


async def read_modify_write(
    current: R,
    reread: Callable[[], Awaitable[R]],
    write: Callable[[R], Awaitable[None]],
    *,
    if_match: str | None,
    what: str,
) -> None:
    """Apply a change to ``current`` (already read) with ``write``, which must save on condition of
    ``current.revision`` (``expected_revision=``) and so raise ``StaleRevisionError`` when the
    object changed since. See the module docstring for ``If-Match`` and the retries; ``reread``
    fetches the object again (404 when it is gone).
    """
    admitted = _matching_revisions(if_match) if if_match is not None else None
    for attempt in range(MAX_PATCH_ATTEMPTS):
        if attempt:
            current = await reread()
        if admitted is not None and str(current.revision) not in admitted:
            assert if_match is not None
            raise _precondition_failed(what, current.revision, if_match)
        try:
            await write(current)
            return
        except StaleRevisionError:
            if admitted is not None:  # the object changed between our read and our write
                assert if_match is not None
                raise _precondition_failed(what, (await reread()).revision, if_match) from None
    raise ConflictError(
        f"{what} was changed by other writers during each of {MAX_PATCH_ATTEMPTS} attempts; try again"
    )
