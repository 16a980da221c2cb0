"""Transition embeddings of a scenario in binary, and scenarios rebuilt without blocking the loop.

Why: transition embeddings are nearly all of a scenario's bytes (200 transitions of 1536 floats
are 1.2 MB as float32 but about 6.5 MB as JSON text). Kept inside the ``steps`` JSON they made every
turn parse megabytes on the event loop, stalling every other request of the process. So every
ConfigStore backend keeps a scenario in two parts:

- the scenario *without* transition embeddings (``strip_transition_embeddings``): small; the
  PostgreSQL store keeps its steps as JSONB;
- the embeddings in one binary value (``pack_transition_embeddings``), a ``bytea`` column.

and rebuilds the model with ``assemble_scenario``, which decodes one step at a time and yields to
the event loop whenever it has done about ``DECODE_SLICE_BYTES`` of work: no single synchronous
stretch of a load is longer than a slice (about a millisecond), whatever the scenario's size.

Binary format: one entry per transition, in step order then transition order, each entry being
pgvector's binary ``vector`` format (what ``vector_send`` produces, so revision 0006 converts old
rows in SQL): ``uint16`` dimensions (big-endian), ``uint16`` 0, then that many big-endian float32.
A transition without an embedding is an entry of 0 dimensions. Values are therefore float32, like
every other stored vector: both backends return the same rounded values.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar
from uuid import UUID

from focal.alignment.models import Scenario, ScenarioStep, StepTransition, scenario_limit_errors
from focal.alignment.stores import config_checks as checks
from focal.errors import InvalidDataError, StoreError

__all__ = [
    "DECODE_SLICE_BYTES",
    "LoopSlicer",
    "assemble_scenario",
    "pack_transition_embeddings",
    "prepared_scenario",
    "strip_transition_embeddings",
]

DECODE_SLICE_BYTES = 256 * 1024
"""Work (bytes of JSON or float32 decoded, or copied) between two yields to the event loop; about a
millisecond of CPU on a 2020s server core (measured by ``benchmarks/scenario_load.py``)."""

_HEADER = struct.Struct(">HH")
_FLOAT_BYTES = 4

S = TypeVar("S")


class LoopSlicer:
    """Counts work and yields to the event loop (``asyncio.sleep(0)``) after every ``slice_bytes``.

    ``yields`` says how often it did: tests assert the structure (a large load yields many times)
    rather than time anything.
    """

    def __init__(self, slice_bytes: int = DECODE_SLICE_BYTES) -> None:
        if slice_bytes < 1:
            raise ValueError(f"slice_bytes must be >= 1, got {slice_bytes}")
        self._slice_bytes = slice_bytes
        self._spent = 0
        self.yields = 0

    async def spend(self, amount: int) -> None:
        self._spent += amount
        if self._spent >= self._slice_bytes:
            self._spent = 0
            self.yields += 1
            await asyncio.sleep(0)


def strip_transition_embeddings(scenario: Scenario) -> tuple[Scenario, list[Sequence[float] | None]]:
    """A shallow copy of ``scenario`` whose transitions carry no ``condition_embedding``, and the
    embeddings taken out, in step order then transition order.

    Nothing is validated or copied deeply here (the scenario may hold megabytes of floats): the
    small stripped model is validated by ``config_checks``, the vectors by
    ``pack_transition_embeddings``. Steps that are not models (``model_construct`` lets anything
    in) are refused.
    """
    embeddings: list[Sequence[float] | None] = []
    steps: list[ScenarioStep] = []
    for step in scenario.steps:
        if not isinstance(step, ScenarioStep):
            raise InvalidDataError(f"scenario steps must be ScenarioStep models, got {type(step).__name__}")
        transitions: list[StepTransition] = []
        for transition in step.transitions:
            if not isinstance(transition, StepTransition):
                raise InvalidDataError(
                    f"step transitions must be StepTransition models, got {type(transition).__name__}"
                )
            embeddings.append(transition.condition_embedding)
            transitions.append(transition.model_copy(update={"condition_embedding": None}))
        steps.append(step.model_copy(update={"transitions": transitions}))
    return scenario.model_copy(update={"steps": steps}), embeddings


async def pack_transition_embeddings(
    embeddings: Iterable[Sequence[float] | None], dimensions: int, *, slicer: LoopSlicer | None = None
) -> bytes:
    """The binary form of ``embeddings`` (see the module docstring). Each vector must have
    ``dimensions`` finite values, not all zero, that fit a float32 (``InvalidDataError``)."""
    slicer = slicer or LoopSlicer()
    vector = struct.Struct(f">{dimensions}f")
    parts: list[bytes] = []
    for position, embedding in enumerate(embeddings):
        if embedding is None:
            parts.append(_HEADER.pack(0, 0))
            continue
        what = f"transition condition_embedding #{position}"
        try:
            values = list(embedding)
            if len(values) != dimensions:
                raise InvalidDataError(
                    f"{what} has {len(values)} dimensions, the store is configured for {dimensions}"
                )
            if not all(map(math.isfinite, values)):
                raise InvalidDataError(f"{what} contains NaN or infinite values")
            packed = vector.pack(*values)
        except (TypeError, struct.error, OverflowError) as exc:
            raise InvalidDataError(f"{what} is not a vector of float32 values: {exc}") from exc
        if not any(vector.unpack(packed)):
            raise InvalidDataError(f"{what} is all zeros as float32; cosine similarity is undefined for it")
        parts.append(_HEADER.pack(dimensions, 0) + packed)
        await slicer.spend(len(packed))
    return b"".join(parts)


class _EmbeddingReader:
    """Reads the entries of a packed value one after the other."""

    def __init__(self, data: bytes | None, scenario_id: Any) -> None:
        self._data = memoryview(data or b"")
        self._offset = 0
        self._scenario_id = scenario_id

    def _corrupt(self, why: str) -> StoreError:
        return StoreError(f"stored transition embeddings of scenario {self._scenario_id} are corrupt: {why}")

    def next(self, *, decode: bool = True) -> tuple[list[float] | None, int]:
        """The next embedding (None for an empty entry, or when not ``decode``d: skipped) and
        the bytes decoded."""
        if self._offset + _HEADER.size > len(self._data):
            raise self._corrupt("fewer entries than transitions")
        dimensions, _ = _HEADER.unpack_from(self._data, self._offset)
        start = self._offset + _HEADER.size
        end = start + dimensions * _FLOAT_BYTES
        if end > len(self._data):
            raise self._corrupt("an entry is cut short")
        self._offset = end
        if dimensions == 0 or not decode:
            return None, _HEADER.size
        return list(struct.unpack_from(f">{dimensions}f", self._data, start)), end - start

    def finish(self) -> None:
        if self._offset != len(self._data):
            raise self._corrupt("more entries than transitions")


async def assemble_scenario(
    fields: Mapping[str, Any],
    step_sources: Iterable[S],
    load_step: Callable[[S], tuple[ScenarioStep, int]],
    embeddings: bytes | None,
    *,
    only_step: UUID | None = None,
    slicer: LoopSlicer | None = None,
) -> Scenario:
    """The scenario made of ``fields`` (every field but ``steps``), the steps that ``load_step``
    makes of ``step_sources`` (it returns a step without embeddings and the work it took, e.g. the
    length of the JSON it parsed) and the packed ``embeddings`` (None: leave every
    ``condition_embedding`` empty, for callers that do not need them; with ``only_step``, only
    that step's transitions get theirs, the others are skipped undecoded).

    Yields to the event loop between slices of work (see ``LoopSlicer``).
    """
    slicer = slicer or LoopSlicer()
    reader = _EmbeddingReader(embeddings, fields.get("id")) if embeddings is not None else None
    steps: list[ScenarioStep] = []
    for source in step_sources:
        step, cost = load_step(source)
        await slicer.spend(cost)
        if reader is not None and step.transitions:
            decode = only_step is None or step.id == only_step
            transitions: list[StepTransition] = []
            for transition in step.transitions:
                vector, size = reader.next(decode=decode)
                transitions.append(transition.model_copy(update={"condition_embedding": vector}))
                await slicer.spend(size)
            step = step.model_copy(update={"transitions": transitions})
        steps.append(step)
    if reader is not None:
        reader.finish()
    # Step models are taken as they are (pydantic does not revalidate instances): only the
    # scenario's own fields and validators (the closed graph) run here, which is cheap.
    return Scenario.model_validate({**fields, "steps": steps})


async def prepared_scenario(
    scenario: Scenario, dimensions: int, *, snapshot: bool = False
) -> tuple[Scenario, bytes]:
    """What a backend stores for ``scenario``: the checked scenario without transition embeddings
    (``config_checks.checked_scenario``, within ``SCENARIO_LIMITS`` unless it is an archive
    ``snapshot``) and the packed embeddings. ``InvalidDataError`` for anything unstorable."""
    if not isinstance(scenario, Scenario):
        raise InvalidDataError(f"expected a Scenario, got {type(scenario).__name__}")
    stripped, embeddings = strip_transition_embeddings(scenario)
    row = checks.checked_scenario(stripped, dimensions, snapshot=snapshot)
    if not snapshot:
        errors = scenario_limit_errors(row)
        if errors:
            raise InvalidDataError(f"scenario {row.id} exceeds the scenario limits: {'; '.join(errors)}")
    return row, await pack_transition_embeddings(embeddings, dimensions)
