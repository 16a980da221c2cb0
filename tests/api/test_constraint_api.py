"""Hard constraints over HTTP: the rule fields, their validation (422 naming the pattern), and the
write-time checks of templates against constraints (and of constraints against templates and the
safe message). Every refusal changes nothing."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from focal.alignment.constraint_patterns import MAX_PATTERNS
from tests.api.conftest import ApiHarness, bearer

NO_REFUND = {
    "name": "no refund promises",
    "condition_text": "refund money back",
    "action_text": "Never promise a refund before the item is inspected.",
    "is_hard_constraint": True,
    "forbid_patterns": [r"(?i)\bfull refund\b", r"\d+\s*EUR"],
}


async def _agent(api: ApiHarness) -> str:
    response = await api.client.post(
        "/v1/agents", json={"name": f"agent {uuid4().hex[:8]}"}, headers=api.headers
    )
    assert response.status_code == 201, response.text
    return f"/v1/agents/{response.json()['id']}"


async def _post(api: ApiHarness, url: str, body: dict[str, Any]) -> Any:
    response = await api.client.post(url, json=body, headers=api.headers)
    assert response.status_code == 201, response.text
    return response.json()


def _refused(response: Any, field: str, *words: str) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    fields = [detail["field"] for detail in error["details"]["errors"]]
    assert field in fields, error
    for word in words:
        assert word in error["message"], error
    return str(error["message"])


async def _listed(api: ApiHarness, base: str, kind: str) -> list[Any]:
    response = await api.client.get(f"{base}/{kind}", headers=api.headers)
    items: list[Any] = response.json()["items"]
    return items


async def test_constraint_fields_are_created_patched_and_returned(api: ApiHarness) -> None:
    base = await _agent(api)
    created = await _post(api, f"{base}/rules", {**NO_REFUND, "judge_instructions": "No money promises."})
    assert created["forbid_patterns"] == NO_REFUND["forbid_patterns"]
    assert (created["require_patterns"], created["judge_instructions"]) == ([], "No money promises.")
    url = f"{base}/rules/{created['id']}"

    patched = await api.client.patch(
        url, json={"require_patterns": ["(?i)support"], "judge_instructions": None}, headers=api.headers
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["require_patterns"], patched.json()["judge_instructions"]) == (
        ["(?i)support"],
        None,
    )
    assert (await api.client.get(url, headers=api.headers)).json() == patched.json()
    plain = await _post(api, f"{base}/rules", {"name": "p", "condition_text": "c", "action_text": "a"})
    assert (plain["forbid_patterns"], plain["require_patterns"], plain["judge_instructions"]) == (
        [],
        [],
        None,
    )
    # another tenant sees none of it
    assert (await api.client.get(url, headers=bearer(uuid4()))).status_code == 404


async def test_invalid_patterns_are_422_naming_the_pattern_and_write_nothing(api: ApiHarness) -> None:
    base = await _agent(api)
    cases = [
        ({"forbid_patterns": ["fine", "(unclosed"]}, "body.forbid_patterns.1", "missing ): (unclosed"),
        ({"require_patterns": [r"(a)\1"]}, "body.require_patterns.0", "invalid escape sequence"),
        ({"forbid_patterns": [r"(?<!no )refund"]}, "body.forbid_patterns.0", "not a valid RE2 pattern"),
        ({"forbid_patterns": [r"\p{L}{500}"]}, "body.forbid_patterns.0", "pattern too large"),
        ({"forbid_patterns": [""]}, "body.forbid_patterns.0", ""),
        ({"forbid_patterns": ["a"] * (MAX_PATTERNS + 1)}, "body.forbid_patterns", ""),
        ({"judge_instructions": "   "}, "body.judge_instructions", ""),
        ({"is_hard_constraint": False}, "body", "need is_hard_constraint=true"),
    ]
    for change, field, words in cases:
        response = await api.client.post(f"{base}/rules", json={**NO_REFUND, **change}, headers=api.headers)
        _refused(response, field, words)
    assert await _listed(api, base, "rules") == []

    rule = await _post(api, f"{base}/rules", NO_REFUND)
    url = f"{base}/rules/{rule['id']}"
    for change, field, words in cases:
        _refused(await api.client.patch(url, json=change, headers=api.headers), field, words)
    assert (await api.client.get(url, headers=api.headers)).json() == rule  # unchanged


async def test_a_template_that_breaks_a_global_constraint_is_refused(api: ApiHarness) -> None:
    base = await _agent(api)
    rule = await _post(api, f"{base}/rules", NO_REFUND)
    for mode in ("EXCLUSIVE", "SUGGEST", "FALLBACK"):
        response = await api.client.post(
            f"{base}/templates",
            json={"name": f"t-{mode}", "text": "You get a Full Refund today.", "mode": mode},
            headers=api.headers,
        )
        _refused(response, "body.text", "no refund promises", rule["id"], "forbidden pattern")
    assert await _listed(api, base, "templates") == []

    fine = await _post(
        api, f"{base}/templates", {"name": "ok", "text": "We inspect first.", "mode": "EXCLUSIVE"}
    )
    url = f"{base}/templates/{fine['id']}"
    patch = await api.client.patch(url, json={"text": "Refund of 50 EUR."}, headers=api.headers)
    _refused(patch, "body.text", "no refund promises")
    assert (await api.client.get(url, headers=api.headers)).json() == fine
    renamed = await api.client.patch(url, json={"name": "renamed"}, headers=api.headers)
    assert renamed.status_code == 200  # a change that keeps the text is not re-checked needlessly

    # a disabled constraint does not refuse templates
    disabled = await api.client.patch(
        f"{base}/rules/{rule['id']}", json={"enabled": False}, headers=api.headers
    )
    assert disabled.status_code == 200
    await _post(api, f"{base}/templates", {"name": "later", "text": "A full refund.", "mode": "SUGGEST"})
    # ... and cannot be enabled again while a template breaks it
    enable = await api.client.patch(f"{base}/rules/{rule['id']}", json={"enabled": True}, headers=api.headers)
    _refused(enable, "body.forbid_patterns", "template 'later'", "SUGGEST")


async def test_a_constraint_an_existing_template_would_break_is_refused(api: ApiHarness) -> None:
    base = await _agent(api)
    exclusive = await _post(
        api, f"{base}/templates", {"name": "promise", "text": "A full refund, today!", "mode": "EXCLUSIVE"}
    )
    message = _refused(
        await api.client.post(f"{base}/rules", json=NO_REFUND, headers=api.headers),
        "body.forbid_patterns",
        "template 'promise'",
        exclusive["id"],
        "EXCLUSIVE",
    )
    assert "full refund" in message
    assert await _listed(api, base, "rules") == []

    # a plain rule becoming that constraint is refused the same way
    plain = await _post(api, f"{base}/rules", {k: v for k, v in NO_REFUND.items() if k != "forbid_patterns"})
    url = f"{base}/rules/{plain['id']}"
    patch = await api.client.patch(url, json={"forbid_patterns": [r"(?i)full refund"]}, headers=api.headers)
    _refused(patch, "body.forbid_patterns", "template 'promise'")
    assert (await api.client.get(url, headers=api.headers)).json() == plain
    # require patterns too: every template must say it
    require = await api.client.patch(url, json={"require_patterns": ["inspection"]}, headers=api.headers)
    _refused(require, "body.require_patterns", "does not match the required pattern")


async def test_the_safe_message_must_pass_every_constraint(api: ApiHarness) -> None:
    base = await _agent(api)
    safe = api.services.settings.turn.constraint_safe_message
    response = await api.client.post(
        f"{base}/rules", json={**NO_REFUND, "forbid_patterns": ["(?i)sorry"]}, headers=api.headers
    )
    assert "sorry" in safe.lower()
    _refused(response, "body.forbid_patterns", "FOCAL_TURN__CONSTRAINT_SAFE_MESSAGE")
    assert await _listed(api, base, "rules") == []


async def test_scoped_constraints_check_the_templates_of_their_scope(api: ApiHarness) -> None:
    base = await _agent(api)
    a, b = str(uuid4()), str(uuid4())
    scenario = await _post(
        api,
        f"{base}/scenarios",
        {
            "name": "returns",
            "entry_step_id": a,
            "steps": [{"id": a, "name": "ask"}, {"id": b, "name": "done"}],
        },
    )
    step_template = {"name": "step", "text": "A full refund.", "scope": "STEP", "scope_id": b}
    global_template = await _post(api, f"{base}/templates", {"name": "global", "text": "A full refund."})
    scoped = {**NO_REFUND, "scope": "SCENARIO", "scope_id": scenario["id"]}
    await _post(api, f"{base}/rules", scoped)  # the GLOBAL template is outside its write-time scope

    refused = await api.client.post(f"{base}/templates", json=step_template, headers=api.headers)
    _refused(refused, "body.text", "no refund promises")  # a step of the scenario is inside it
    moved = await api.client.patch(
        f"{base}/templates/{global_template['id']}",
        json={"scope": "SCENARIO", "scope_id": scenario["id"]},
        headers=api.headers,
    )
    _refused(moved, "body.text", "no refund promises")
    step_scoped = {**NO_REFUND, "name": "step rule", "scope": "STEP", "scope_id": a}
    await _post(api, f"{base}/rules", step_scoped)  # step a has no template that breaks it
    await _post(api, f"{base}/templates", {**step_template, "scope_id": a, "text": "We inspect first."})


def test_the_openapi_document_describes_the_constraint_fields(api: ApiHarness) -> None:
    spec = api.app.openapi()
    schemas = spec["components"]["schemas"]
    for name in ("RuleCreate", "RuleUpdate", "RuleOut"):
        assert {"forbid_patterns", "require_patterns", "judge_instructions"} <= set(
            schemas[name]["properties"]
        )
    forbid = schemas["RuleCreate"]["properties"]["forbid_patterns"]
    assert forbid["maxItems"] == MAX_PATTERNS and "RE2" in forbid["description"]
