"""The binary form of transition embeddings, and scenario assembly in slices (``scenario_codec``).

The slicing tests are structural: they count the work the decoder declares between two yields to
the event loop and how often another task ran, never the time anything took.
"""

from __future__ import annotations

import asyncio
import random
import struct
from uuid import uuid4

import pytest

from focal.alignment.models import SCENARIO_LIMITS, Scenario, ScenarioStep, StepTransition
from focal.alignment.stores.postgres_rows import STEP_EMBEDDINGS
from focal.alignment.stores.scenario_codec import (
    DECODE_SLICE_BYTES,
    LoopSlicer,
    assemble_scenario,
    pack_transition_embeddings,
    strip_transition_embeddings,
)
from focal.errors import InvalidDataError, StoreError
from focal.validation import float32

DIMENSIONS = 1536  # a production-sized embedding


class RecordingSlicer(LoopSlicer):
    """A LoopSlicer that remembers the most work it saw between two yields."""

    def __init__(self, slice_bytes: int = DECODE_SLICE_BYTES) -> None:
        super().__init__(slice_bytes)
        self.largest_stretch = 0
        self._stretch = 0
        self.largest_item = 0

    async def spend(self, amount: int) -> None:
        self._stretch += amount
        self.largest_item = max(self.largest_item, amount)
        self.largest_stretch = max(self.largest_stretch, self._stretch)
        before = self.yields
        await super().spend(amount)
        if self.yields != before:
            self._stretch = 0


def largest_scenario() -> Scenario:
    """The most transitions allowed, with production-sized embeddings (texts short: the JSON part
    is covered by the contract suite)."""
    rng = random.Random(7)
    step_ids = [uuid4() for _ in range(SCENARIO_LIMITS.max_steps)]
    per_step = SCENARIO_LIMITS.max_transitions // SCENARIO_LIMITS.max_steps
    steps = [
        ScenarioStep(
            id=step_id,
            name=f"step {n}",
            transitions=[
                StepTransition(
                    to_step_id=step_ids[(n + k + 1) % len(step_ids)],
                    condition_text=f"condition {n}.{k}",
                    condition_embedding=[rng.uniform(-1, 1) for _ in range(DIMENSIONS)],
                )
                for k in range(per_step)
            ],
        )
        for n, step_id in enumerate(step_ids)
    ]
    return Scenario(tenant_id=uuid4(), agent_id=uuid4(), name="big", entry_step_id=step_ids[0], steps=steps)


async def test_pack_writes_pgvector_binary_entries_and_empty_ones() -> None:
    packed = await pack_transition_embeddings([[1.0, -2.5], None, [0.1, 0.0]], 2)
    assert packed == (
        struct.pack(">HH2f", 2, 0, 1.0, -2.5)
        + struct.pack(">HH", 0, 0)
        + struct.pack(">HH2f", 2, 0, 0.1, 0.0)
    )
    assert await pack_transition_embeddings([], 2) == b""


@pytest.mark.parametrize(
    "vector",
    [
        [1.0],
        [1.0, 2.0, 3.0],
        [float("nan"), 1.0],
        [float("inf"), 1.0],
        [0.0, 0.0],
        [1e-50, 0.0],
        [1e39, 1.0],
        ["a", 1],
    ],
    ids=["short", "long", "nan", "inf", "zero", "zero-as-float32", "too-large", "not-numbers"],
)
async def test_pack_refuses_vectors_no_float32_column_could_hold(vector: list[object]) -> None:
    with pytest.raises(InvalidDataError, match="condition_embedding #1"):
        await pack_transition_embeddings([[1.0, 0.0], vector], 2)  # type: ignore[list-item]


async def test_a_scenario_round_trips_through_strip_pack_and_assemble() -> None:
    scenario = largest_scenario()
    stripped, embeddings = strip_transition_embeddings(scenario)
    assert all(t.condition_embedding is None for step in stripped.steps for t in step.transitions)
    assert scenario.steps[0].transitions[0].condition_embedding is not None  # the original is untouched
    packed = await pack_transition_embeddings(embeddings, DIMENSIONS)
    assert len(packed) == SCENARIO_LIMITS.max_transitions * (4 + 4 * DIMENSIONS)

    step_texts = [step.model_dump_json() for step in stripped.steps]
    fields = stripped.model_dump(exclude={"steps"})
    rebuilt = await assemble_scenario(
        fields, step_texts, lambda text: (ScenarioStep.model_validate_json(text), len(text)), packed
    )
    assert rebuilt.model_dump(exclude=STEP_EMBEDDINGS) == scenario.model_dump(exclude=STEP_EMBEDDINGS)
    for step, original in zip(rebuilt.steps, scenario.steps, strict=True):
        for transition, before in zip(step.transitions, original.transitions, strict=True):
            assert before.condition_embedding is not None
            assert transition.condition_embedding == float32(before.condition_embedding)


async def test_assembling_the_largest_scenario_yields_between_bounded_slices() -> None:
    stripped, embeddings = strip_transition_embeddings(largest_scenario())
    packed = await pack_transition_embeddings(embeddings, DIMENSIONS)
    step_texts = [step.model_dump_json() for step in stripped.steps]
    slicer = RecordingSlicer()
    ticks = 0
    assembling = True

    async def ticker() -> None:
        nonlocal ticks
        while assembling:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = ticks
    await assemble_scenario(
        stripped.model_dump(exclude={"steps"}),
        step_texts,
        lambda text: (ScenarioStep.model_validate_json(text), len(text)),
        packed,
        slicer=slicer,
    )
    assembling = False
    await task

    total = len(packed) + sum(map(len, step_texts))
    assert slicer.yields >= total // DECODE_SLICE_BYTES - 1  # about 1.2 MB: four or more slices
    assert slicer.yields >= 4
    assert ticks - start >= slicer.yields  # another task ran at every yield
    # No stretch without a yield is much longer than a slice: at most one item more.
    assert slicer.largest_stretch < DECODE_SLICE_BYTES + slicer.largest_item
    assert slicer.largest_item <= 4 * DIMENSIONS + 4096


async def test_without_packed_embeddings_transitions_stay_empty() -> None:
    stripped, _ = strip_transition_embeddings(largest_scenario())
    rebuilt = await assemble_scenario(
        stripped.model_dump(exclude={"steps"}), stripped.steps, lambda step: (step, 0), None
    )
    assert all(t.condition_embedding is None for step in rebuilt.steps for t in step.transitions)


@pytest.mark.parametrize(
    ("packed", "why"),
    [
        (struct.pack(">HH", 0, 0), "fewer entries"),
        (struct.pack(">HH", 0, 0) + struct.pack(">HH1f", 2, 0, 1.0), "cut short"),
        (struct.pack(">HH", 0, 0) * 3, "more entries"),
    ],
)
async def test_corrupt_stored_embeddings_are_a_store_error(packed: bytes, why: str) -> None:
    a, b = uuid4(), uuid4()
    scenario = Scenario(
        tenant_id=uuid4(),
        agent_id=uuid4(),
        name="two transitions",
        entry_step_id=a,
        steps=[
            ScenarioStep(
                id=a,
                name="a",
                transitions=[
                    StepTransition(to_step_id=b, condition_text="x"),
                    StepTransition(to_step_id=a, condition_text="y"),
                ],
            ),
            ScenarioStep(id=b, name="b"),
        ],
    )
    with pytest.raises(StoreError, match=why):
        await assemble_scenario(
            scenario.model_dump(exclude={"steps"}), scenario.steps, lambda s: (s, 0), packed
        )


def test_strip_refuses_steps_that_are_not_models() -> None:
    a = uuid4()
    scenario = Scenario.model_construct(steps=[{"id": a, "name": "dict"}], entry_step_id=a)
    with pytest.raises(InvalidDataError, match="ScenarioStep"):
        strip_transition_embeddings(scenario)
