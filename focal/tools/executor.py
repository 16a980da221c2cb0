"""``ToolExecutor``: what the turn pipeline needs to run a tool, whatever runs it.

The pipeline depends on this interface only; ``focal.bootstrap`` builds the implementation
(``HttpToolExecutor`` on one shared ``httpx.AsyncClient``) and hands it to the ``TurnEngine``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from focal.tools.models import HttpToolSpec, ToolOutcome

__all__ = ["ToolExecutor"]


class ToolExecutor(ABC):
    @abstractmethod
    async def execute(
        self, name: str, spec: HttpToolSpec, arguments: Mapping[str, Any], *, secret: str | None = None
    ) -> ToolOutcome:
        """Make the call; ``arguments`` were validated against the tool's schema by the caller.

        Never raises for what the remote side does (an error, a timeout, a body too large): that
        is an outcome. ``secret`` goes only to ``spec``'s URL and never into the outcome."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op for executors without clients
        """Release network resources the executor owns. Safe to call more than once."""
