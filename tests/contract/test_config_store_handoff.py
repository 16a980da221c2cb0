"""ConfigStore contract: a rule's ``requests_handoff`` flag is kept by every backend, on every read
path the turn uses (the rule search) and the API uses (get, list), and changed by a save."""

from __future__ import annotations

from focal.alignment.stores.config_store import ConfigStore
from tests.contract.config_backends import config_store_fixture, rule, saved_agent
from tests.support import new_tenant, unit_vector

__all__ = ["config_store_fixture"]


async def test_requests_handoff_is_kept_and_found_by_the_rule_search(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    plain = rule(owner, embedding=unit_vector(0))
    handoff = rule(owner, embedding=unit_vector(0), requests_handoff=True)
    for r in (plain, handoff):
        await config_store.save_rule(r)
    assert plain.requests_handoff is False  # the default
    stored = await config_store.get_rule(tenant, handoff.id)
    assert stored is not None and stored.requests_handoff is True
    listed = {r.id: r.requests_handoff for r in await config_store.get_rules(tenant, owner.id)}
    assert listed == {plain.id: False, handoff.id: True}
    found = {
        r.id: r.requests_handoff
        for r, _ in await config_store.vector_search_rules(unit_vector(0), tenant, owner.id)
    }
    assert found == {plain.id: False, handoff.id: True}
    assert await config_store.vector_search_rules(unit_vector(0), new_tenant(), owner.id) == []


async def test_a_conditional_save_turns_the_flag_off(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    created = rule(owner, requests_handoff=True)
    await config_store.save_rule(created)
    current = await config_store.get_rule(tenant, created.id)
    assert current is not None
    await config_store.save_rule(
        current.model_copy(update={"requests_handoff": False}), expected_revision=current.revision
    )
    after = await config_store.get_rule(tenant, created.id)
    assert after is not None and (after.requests_handoff, after.revision) == (False, current.revision + 1)
