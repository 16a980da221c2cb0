"""What config bodies may say: references to the agent's own objects only, tool ids of the
documented pattern, any JSON value as a variable's default, scenarios within the size limits.
Each refusal is a 422 that names the field and changes nothing."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from focal.alignment.models import SCENARIO_LIMITS
from tests.api.conftest import ApiHarness, bearer, define_tool

RULE = {"name": "refunds", "condition_text": "refund please", "action_text": "explain"}


async def _agent(api: ApiHarness, headers: dict[str, str] | None = None) -> str:
    response = await api.client.post(
        "/v1/agents", json={"name": f"agent {uuid4().hex[:8]}"}, headers=headers or api.headers
    )
    assert response.status_code == 201, response.text
    return f"/v1/agents/{response.json()['id']}"


def _scenario(**fields: Any) -> dict[str, Any]:
    a, b = str(uuid4()), str(uuid4())
    body: dict[str, Any] = {
        "name": f"scenario {uuid4().hex[:6]}",
        "entry_step_id": a,
        "steps": [
            {"id": a, "name": "ask", "transitions": [{"to_step_id": b, "condition_text": "answered"}]},
            {"id": b, "name": "done"},
        ],
    }
    body.update(fields)
    return body


async def _post(
    api: ApiHarness, url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Any:
    response = await api.client.post(url, json=body, headers=headers or api.headers)
    assert response.status_code == 201, response.text
    return response.json()


def _refused(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert any(detail["field"] == field for detail in error["details"]["errors"]), error


# --- item 14: references are the agent's own --------------------------------------------------


async def test_rule_and_template_references_must_be_the_agents_own(api: ApiHarness) -> None:
    base, sibling = await _agent(api), await _agent(api)
    foreign_tenant = bearer(uuid4())
    foreign = await _agent(api, foreign_tenant)
    own_scenario = await _post(api, f"{base}/scenarios", _scenario())
    own_template = await _post(api, f"{base}/templates", {"name": "t", "text": "Hi"})
    sibling_scenario = await _post(api, f"{sibling}/scenarios", _scenario())
    sibling_template = await _post(api, f"{sibling}/templates", {"name": "t", "text": "Hi"})
    foreign_scenario = await _post(api, f"{foreign}/scenarios", _scenario(), foreign_tenant)
    foreign_template = await _post(api, f"{foreign}/templates", {"name": "t", "text": "Hi"}, foreign_tenant)

    not_ours = {
        "scope_id": [
            ("SCENARIO", sibling_scenario["id"]),
            ("SCENARIO", foreign_scenario["id"]),
            ("SCENARIO", str(uuid4())),
            ("SCENARIO", own_scenario["steps"][0]["id"]),  # a step is not a scenario
            ("STEP", sibling_scenario["steps"][0]["id"]),
            ("STEP", foreign_scenario["steps"][0]["id"]),
            ("STEP", own_scenario["id"]),  # a scenario is not a step
        ],
    }
    for kind, body in (("rules", RULE), ("templates", {"name": "scoped", "text": "Hi"})):
        for scope, scope_id in not_ours["scope_id"]:
            refused = await api.client.post(
                f"{base}/{kind}", json={**body, "scope": scope, "scope_id": scope_id}, headers=api.headers
            )
            _refused(refused, "body.scope_id")
        for scope, scope_id in (("SCENARIO", own_scenario["id"]), ("STEP", own_scenario["steps"][1]["id"])):
            await _post(api, f"{base}/{kind}", {**body, "scope": scope, "scope_id": scope_id})
    for template_id in (sibling_template["id"], foreign_template["id"], str(uuid4())):
        refused = await api.client.post(
            f"{base}/rules",
            json={**RULE, "attached_template_ids": [own_template["id"], template_id]},
            headers=api.headers,
        )
        _refused(refused, "body.attached_template_ids")
        assert template_id in refused.json()["error"]["message"]
    rules = (await api.client.get(f"{base}/rules", headers=api.headers)).json()["items"]
    assert len(rules) == 2  # only the two valid scoped rules

    rule = await _post(api, f"{base}/rules", {**RULE, "attached_template_ids": [own_template["id"]]})
    url = f"{base}/rules/{rule['id']}"
    for change, field in (
        (
            {"attached_template_ids": [own_template["id"], sibling_template["id"]]},
            "body.attached_template_ids",
        ),
        ({"scope": "SCENARIO", "scope_id": foreign_scenario["id"]}, "body.scope_id"),
    ):
        _refused(await api.client.patch(url, json=change, headers=api.headers), field)
    assert (await api.client.get(url, headers=api.headers)).json() == rule  # unchanged
    moved = await api.client.patch(
        url, json={"scope": "SCENARIO", "scope_id": own_scenario["id"]}, headers=api.headers
    )
    assert moved.status_code == 200 and moved.json()["scope_id"] == own_scenario["id"]


async def test_scenario_steps_refer_only_to_the_agents_rules_and_templates(api: ApiHarness) -> None:
    base, sibling = await _agent(api), await _agent(api)
    own_rule = await _post(api, f"{base}/rules", RULE)
    own_template = await _post(api, f"{base}/templates", {"name": "t", "text": "Hi"})
    other_rule = await _post(api, f"{sibling}/rules", RULE)
    other_template = await _post(api, f"{sibling}/templates", {"name": "t", "text": "Hi"})

    def with_references(rule_ids: list[str], template_ids: list[str]) -> dict[str, Any]:
        body = _scenario()
        body["steps"][1] |= {"rule_ids": rule_ids, "template_ids": template_ids}
        return body

    for rule_ids, template_ids, field in (
        ([own_rule["id"], other_rule["id"]], [], "body.steps.1.rule_ids"),
        ([], [str(uuid4())], "body.steps.1.template_ids"),
        ([], [other_template["id"]], "body.steps.1.template_ids"),
    ):
        refused = await api.client.post(
            f"{base}/scenarios", json=with_references(rule_ids, template_ids), headers=api.headers
        )
        _refused(refused, field)
    assert (await api.client.get(f"{base}/scenarios", headers=api.headers)).json()["items"] == []

    created = await _post(api, f"{base}/scenarios", with_references([own_rule["id"]], [own_template["id"]]))
    url = f"{base}/scenarios/{created['id']}"
    steps = with_references([own_rule["id"], other_rule["id"]], [])["steps"]
    _refused(await api.client.patch(url, json={"steps": steps}, headers=api.headers), "body.steps.1.rule_ids")
    assert (await api.client.get(url, headers=api.headers)).json() == created


# --- item 7: tool ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("tool_id", ["a/b", "Lookup", "1tool", "tool-x", "tool x", "_tool", "t" * 65, ""])
async def test_a_tool_id_outside_the_pattern_is_refused(api: ApiHarness, tool_id: str) -> None:
    base = await _agent(api)
    _refused(
        await api.client.post(f"{base}/tools", json={"tool_id": tool_id}, headers=api.headers), "body.tool_id"
    )
    _refused(
        await api.client.post(
            f"{base}/rules", json={**RULE, "attached_tool_ids": [tool_id]}, headers=api.headers
        ),
        "body.attached_tool_ids.0",
    )
    _refused(
        await api.client.post(
            f"{base}/variables", json={"name": "v", "resolver_tool_id": tool_id}, headers=api.headers
        ),
        "body.resolver_tool_id",
    )
    assert (await api.client.get(f"{base}/tools", headers=api.headers)).json()["items"] == []


async def test_every_tool_id_that_can_be_created_can_be_read_patched_and_deleted(api: ApiHarness) -> None:
    base = await _agent(api)
    for tool_id in ("a", "lookup_order_2", "t" * 64):
        await define_tool(api.client, api.headers, tool_id)
        await _post(api, f"{base}/tools", {"tool_id": tool_id})
        url = f"{base}/tools/{tool_id}"
        assert (await api.client.get(url, headers=api.headers)).json()["tool_id"] == tool_id
        assert (await api.client.patch(url, json={"enabled": False}, headers=api.headers)).status_code == 200
        assert (await api.client.delete(url, headers=api.headers)).status_code == 204
    assert (await api.client.get(f"{base}/tools/Not_Valid", headers=api.headers)).status_code == 422


# --- item 9: a variable's default value is any JSON value --------------------------------------


@pytest.mark.parametrize("value", [4155551234, -(2**63), [4155551234], {"phone": 4155551234}, 2.5, None])
async def test_a_variable_default_value_is_any_json_value(api: ApiHarness, value: Any) -> None:
    base = await _agent(api)
    created = await _post(api, f"{base}/variables", {"name": "phone", "default_value": value})
    assert created["default_value"] == value
    url = f"{base}/variables/{created['id']}"
    assert (await api.client.get(url, headers=api.headers)).json()["default_value"] == value
    patched = await api.client.patch(
        url, json={"default_value": value, "description": "d"}, headers=api.headers
    )
    assert patched.status_code == 200 and patched.json()["default_value"] == value


# --- item 5: scenario size limits ---------------------------------------------------------------


def _beyond(field: str) -> tuple[dict[str, Any], str]:
    """A scenario body just beyond one limit, and the field the 422 names."""
    limits = SCENARIO_LIMITS
    if field == "steps":
        body = _scenario()
        body["steps"] += [{"name": f"s{n}"} for n in range(limits.max_steps - 1)]
        return body, "body.steps"
    if field == "transitions_per_step":
        body = _scenario()
        target = body["steps"][1]["id"]
        body["steps"][0]["transitions"] = [{"to_step_id": target, "condition_text": "c"}] * (
            limits.max_transitions_per_step + 1
        )
        return body, "body.steps.0.transitions"
    if field == "transitions":
        body = _scenario()
        target = body["steps"][1]["id"]
        per_step = limits.max_transitions_per_step
        count = limits.max_transitions // per_step + 1
        body["steps"] += [
            {"name": f"s{n}", "transitions": [{"to_step_id": target, "condition_text": "c"}] * per_step}
            for n in range(count)
        ]
        return body, "body"
    if field == "condition_text":
        body = _scenario()
        body["steps"][0]["transitions"][0]["condition_text"] = "x" * (limits.max_condition_length + 1)
        return body, "body.steps.0.transitions.0.condition_text"
    if field == "description":
        return _scenario(description="x" * (limits.max_description_length + 1)), "body.description"
    if field == "tags":
        return _scenario(tags=["t"] * (limits.max_tags + 1)), "body.tags"
    raise AssertionError(field)


@pytest.mark.parametrize(
    "field", ["steps", "transitions_per_step", "transitions", "condition_text", "description", "tags"]
)
async def test_a_scenario_beyond_a_limit_is_422_and_changes_nothing(api: ApiHarness, field: str) -> None:
    base = await _agent(api)
    kept = await _post(api, f"{base}/scenarios", _scenario())
    body, location = _beyond(field)
    _refused(await api.client.post(f"{base}/scenarios", json=body, headers=api.headers), location)
    if field in ("description", "tags"):
        patch = {field: body[field]}
    else:
        patch = {"steps": body["steps"], "entry_step_id": body["entry_step_id"]}
    url = f"{base}/scenarios/{kept['id']}"
    _refused(await api.client.patch(url, json=patch, headers=api.headers), location)
    assert (await api.client.get(f"{base}/scenarios", headers=api.headers)).json()["items"] == [kept]
