"""Handing a streamed answer out piece by piece, exactly as it will be recorded.

``TurnEngine.run(on_delta=...)`` gives the turn a ``DeltaSink``; ``HandedOut`` stands between the
provider's stream and that sink so that the pieces it hands out, joined, are always the answer the
turn records:

- the answer may come from several requests (a tool loop asks the model again after each round):
  each request's text is a *segment*, stripped like the recorded answer (leading whitespace
  dropped, trailing whitespace held back until more text follows it), and segments are separated
  by a blank line;
- each piece is checked for text no store can keep (NUL, lone surrogates) before it leaves, so
  the customer never sees what the turn could not record (the model's fault: ``InvalidResponseError``);
- ``complete`` adds a last piece (a FALLBACK template after a stream that broke off, or a whole
  answer given in one piece) after a blank line.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable

from focal.errors import InvalidDataError, InvalidResponseError
from focal.providers.llm.base import LLMResponse, StreamDone, StreamEvent, TextDelta
from focal.validation import check_text

__all__ = ["SEGMENT_SEPARATOR", "DeltaSink", "HandedOut", "joined_segments", "stream_response"]

DeltaSink = Callable[[str], Awaitable[None]]
"""Receives each piece of a streamed answer, in order (``TurnEngine.run(on_delta=...)``)."""

SEGMENT_SEPARATOR = "\n\n"
"""Between the texts of two requests of one answer, and before a FALLBACK that completes one."""


def joined_segments(texts: list[str]) -> str:
    """The answer made of several requests' texts: what ``HandedOut`` hands out for them."""
    return SEGMENT_SEPARATOR.join(text.strip() for text in texts if text.strip())


class HandedOut:
    """The pieces handed to the sink so far (``text``), shaped like the recorded answer."""

    def __init__(self, sink: DeltaSink) -> None:
        self._sink = sink
        self.text = ""  # everything handed out, joined
        self._held = ""  # trailing whitespace of the current segment, waiting for more text
        self._started = False  # the current segment has handed out text

    def new_segment(self) -> None:
        """The next pieces belong to another request: held whitespace is dropped."""
        self._held, self._started = "", False

    async def send(self, piece: str, provider: str) -> None:
        try:
            check_text(piece, "the model's answer")
        except InvalidDataError as exc:  # never hand out what the turn could not record
            message = f"the model's answer cannot be stored: {exc}"
            raise InvalidResponseError(message, provider=provider) from exc
        if not self._started:
            piece = piece.lstrip()
        body = (self._held + piece).rstrip()
        self._held = (self._held + piece)[len(body) :]
        if body:
            if not self._started and self.text:
                body = SEGMENT_SEPARATOR + body
            self._started = True
            await self._emit(body)

    async def complete(self, text: str) -> None:
        """``text`` as the last piece, after a blank line when something was handed out already."""
        self.new_segment()
        await self._emit(SEGMENT_SEPARATOR + text if self.text else text)

    async def _emit(self, piece: str) -> None:
        self.text += piece
        await self._sink(piece)


async def stream_response(
    events: AsyncGenerator[StreamEvent, None], handed_out: HandedOut, provider: str
) -> LLMResponse:
    """Hand one request's stream out as it arrives (a new segment); its final response. The stream
    is read to its end (its provider logs the call as complete), or closed at once when this is
    cancelled (the vendor connection is closed)."""
    handed_out.new_segment()
    final: LLMResponse | None = None
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                await handed_out.send(event.text, provider)
            elif isinstance(event, StreamDone):
                final = event.response
    finally:
        await events.aclose()
    if final is None:
        raise InvalidResponseError("the stream ended without its final response", provider=provider)
    return final
