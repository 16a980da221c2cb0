"""Reading scenarios (live and archived) from PostgreSQL without blocking the event loop.

A scenario row keeps its steps as JSONB *without* transition embeddings and the embeddings in the
``transition_embeddings`` bytea (``scenario_codec``). Reads select the steps as an array of one
JSON text per step (in order), so that ``assemble_scenario`` parses them one at a time and yields
to the loop between slices, instead of one ``json.loads`` of the whole document.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg

from focal.alignment.models import Scenario, ScenarioStep
from focal.alignment.stores.postgres_rows import SCENARIOS
from focal.alignment.stores.scenario_codec import assemble_scenario

__all__ = ["ARCHIVE_SELECT", "archived_scenario_from_record", "scenario_from_record", "scenario_select"]

_FIELDS = tuple(column for column in SCENARIOS.model_columns if column != "steps")


def _step_texts(document: str) -> str:
    return (
        f"ARRAY(SELECT e.value::text FROM jsonb_array_elements({document}) WITH ORDINALITY AS e(value, n) "
        "ORDER BY e.n) AS step_texts"
    )


def scenario_select(*, with_embeddings: bool) -> str:
    """The select list of a scenario read (``FROM scenarios``)."""
    embeddings = "transition_embeddings" if with_embeddings else "NULL::bytea AS transition_embeddings"
    return f"{', '.join(_FIELDS)}, {_step_texts('steps')}, {embeddings}"


# ``FROM scenario_archives``: the snapshot's fields but its steps, the steps, the embeddings.
_ARCHIVED_STEPS = "scenario->'steps'"
ARCHIVE_SELECT = f"scenario - 'steps' AS head, {_step_texts(_ARCHIVED_STEPS)}, transition_embeddings"


def _step_from_json(text: str) -> tuple[ScenarioStep, int]:
    return ScenarioStep.model_validate_json(text), len(text)


async def scenario_from_record(record: asyncpg.Record, *, only_step: UUID | None = None) -> Scenario:
    """A scenario read with ``scenario_select``; ``only_step``: see ``assemble_scenario``."""
    fields: dict[str, Any] = {column: record[column] for column in _FIELDS}
    fields["tags"] = json.loads(fields["tags"])
    return await assemble_scenario(
        fields, record["step_texts"], _step_from_json, record["transition_embeddings"], only_step=only_step
    )


async def archived_scenario_from_record(record: asyncpg.Record) -> Scenario:
    fields: dict[str, Any] = json.loads(record["head"])
    return await assemble_scenario(
        fields, record["step_texts"], _step_from_json, record["transition_embeddings"]
    )
