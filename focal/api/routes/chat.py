"""``POST /v1/agents/{agent_id}/chat``: one customer turn through the turn pipeline.

The route only translates HTTP to a ``TurnRequest`` and back; errors are raised, never caught, and
mapped by ``focal.api.errors``:

- unknown agent, or a ``session_id`` that is not this tenant's session with this agent: 404
  (nothing is written);
- disabled agent: 409 (the request is well-formed; the agent's state refuses it);
- a closed ``session_id``: 409 (omit ``session_id`` to open a new session);
- a ``session_id`` of another channel identity, an empty message or unknown fields: 422;
- a message some store cannot keep (a NUL character, say): 422 before the LLM is called, nothing
  written;
- a concurrent turn on the same session that saved first: 409, and this turn left no trace;
- the LLM provider failing after its retries with no FALLBACK template: 502 (503 when the vendor is
  unavailable, 429 when rate limited), and nothing is saved. An answer no store can keep counts
  as such a failure (502).
- a session in MANUAL mode (handed to a person): the message is recorded as a turn without any
  LLM call and the answer is 202 Accepted with the turn id (``ChatAccepted``); an operator replies
  with ``POST /v1/sessions/{id}/messages``;
- with an ``Idempotency-Key`` header, a retry gets the first response (``focal.api.idempotency``);
- a store unreachable while the turn is written: 503; ``focal/alignment/turn/persist.py`` says
  what is left behind (at most a session save that is undone, or a recorded turn whose events or
  memory are incomplete).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from focal.alignment.turn import TurnConfig, TurnEngine, TurnRequest, TurnResult
from focal.api.deps import ServicesDep, TenantDep
from focal.api.schemas.chat import ChatRequest, ChatResponse
from focal.api.schemas.control import ChatAccepted
from focal.api.sse import EVENT_STREAM, stream_turn, wants_event_stream

router = APIRouter(tags=["chat"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    202: {
        "model": ChatAccepted,
        "description": "the session is in MANUAL mode: the message was recorded for a person to answer",
    },
    404: {"description": "no such agent, or session_id is not this tenant's session with this agent"},
    409: {
        "description": "the agent is disabled, the session is closed, a concurrent turn saved first, "
        "or a request with the same Idempotency-Key is still running"
    },
    429: {"description": "the LLM provider rate-limited us and no FALLBACK template exists"},
    502: {"description": "the LLM failed, or gave an answer no store can keep, and no FALLBACK exists"},
    503: {"description": "the LLM provider or a store is unavailable"},
}


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": 'The turn. With `Accept: text/event-stream` or `"stream": true`: Server-Sent '
        "Events `delta` ({text}), then `done` (this body) or `error` ({status, error})",
        # OpenAPI 3.1: the ``schema`` of an event stream describes one event (3.2 calls it itemSchema)
        "content": {
            EVENT_STREAM: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "event": {"type": "string", "enum": ["delta", "done", "error"]},
                        "data": {
                            "type": "string",
                            "description": "JSON: {text} (delta), this body (done), {status, error} (error)",
                        },
                    },
                    "required": ["event", "data"],
                }
            }
        },
    },
    **_ERRORS,
}


@router.post("/v1/agents/{agent_id}/chat", response_model=ChatResponse, responses=_RESPONSES)
async def chat(
    agent_id: UUID, body: ChatRequest, tenant_id: TenantDep, services: ServicesDep, request: Request
) -> ChatResponse | Response:
    """Run one turn: match rules, move through scenarios, recall memory, answer, remember.

    Streaming (``Accept: text/event-stream`` or ``"stream": true``): see ``focal.api.sse``. An
    error before the first piece of the answer is an ordinary error response, and so is a MANUAL
    session's 202 (no answer to stream)."""
    # Thresholds come from settings (FOCAL_TURN__*); an app may override them in app.state.turn_config.
    config: TurnConfig | None = getattr(request.app.state, "turn_config", None)
    if config is None:
        config = services.settings.turn
    engine = TurnEngine.from_services(services, config)
    turn = TurnRequest(
        tenant_id=tenant_id,
        agent_id=agent_id,
        channel=body.channel,
        user_channel_id=body.user_channel_id,
        message=body.message,
        session_id=body.session_id,
    )
    if body.stream or wants_event_stream(request):
        return await stream_turn(
            request,
            lambda on_delta, on_writing: engine.run(turn, on_delta=on_delta, on_writing=on_writing),
            ChatResponse.from_result,
            _plain,
        )
    result = await engine.run(turn)
    return _plain(result) if not result.answered else ChatResponse.from_result(result)


def _plain(result: TurnResult) -> Response:
    """The non-streaming response of a turn: the ChatResponse, or 202 for a MANUAL session."""
    if result.answered:
        return JSONResponse(ChatResponse.from_result(result).model_dump(mode="json"))
    accepted = ChatAccepted(
        session_id=result.session_id,
        turn_id=result.turn_id,
        turn_number=result.turn_number,
        session_mode=result.session_mode,
    )
    return JSONResponse(accepted.model_dump(mode="json"), status_code=202)
