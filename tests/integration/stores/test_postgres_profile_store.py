"""PostgresProfileStore behaviour only PostgreSQL has: transactions that roll back as a whole,
constraint translation, the schema of revision 0004 and its downgrade."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from uuid import UUID, uuid4

import asyncpg
import pytest
import pytest_asyncio

from focal.conversation.models import Channel
from focal.db.migrate import downgrade
from focal.db.pool import create_pool
from focal.errors import ConflictError, StoreError
from focal.profile.models import ChannelIdentity, CustomerProfile, ProfileAsset, ProfileField
from focal.profile.stores.postgres import PostgresProfileStore
from tests.support import new_tenant

pytestmark = pytest.mark.postgres

DatabaseFactory = Callable[..., Awaitable[str]]
PROFILE_TABLES = ("customer_profiles", "channel_identities", "profile_fields", "profile_assets")


@pytest_asyncio.fixture(loop_scope="session")
async def private_pool(database_factory: DatabaseFactory) -> AsyncIterator[asyncpg.Pool]:
    """A database of its own, for tests that add triggers or drop things."""
    pool = await create_pool(await database_factory(), min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


def make_field(tenant_id: UUID, profile_id: UUID, name: str, value: object) -> ProfileField:
    return ProfileField(tenant_id=tenant_id, profile_id=profile_id, field_name=name, field_value=value)


async def test_get_or_create_race_has_one_winner(pg_dsn: str) -> None:
    """Every call really runs at the same time, and exactly one creates the profile.

    Another transaction holds the identity (inserted, not committed), so each call reads "no
    profile", inserts its own and then waits on the identity's unique key. Once all of them are
    seen waiting at once, the holder rolls back: they all go for the identity together, one wins,
    the others roll their profile back and read the winner's."""
    calls = 8
    pool = await create_pool(pg_dsn, min_size=calls, max_size=calls)  # warm: all connections open
    holder, observer = await asyncpg.connect(pg_dsn), await asyncpg.connect(pg_dsn)
    store = PostgresProfileStore(pool)
    tenant, user = new_tenant(), f"racer-{uuid4().hex[:8]}"
    tasks: list[asyncio.Task[CustomerProfile]] = []
    try:
        hold = holder.transaction()
        await hold.start()
        held_profile = uuid4()
        await holder.execute(
            "INSERT INTO customer_profiles (id, tenant_id, created_at, updated_at) "
            "VALUES ($1, $2, now(), now())",
            held_profile,
            tenant,
        )
        await holder.execute(
            "INSERT INTO channel_identities (id, tenant_id, profile_id, channel, channel_user_id, verified, "
            "created_at) VALUES ($1, $2, $3, 'API', $4, false, now())",
            uuid4(),
            tenant,
            held_profile,
            user,
        )
        tasks += [asyncio.create_task(store.get_or_create(tenant, Channel.API, user)) for _ in range(calls)]
        deadline = time.monotonic() + 30  # a bound, not a timing assumption: normally milliseconds
        waiting = 0
        while waiting < calls:
            assert time.monotonic() < deadline, f"only {waiting} of {calls} calls ever waited together"
            assert not any(task.done() for task in tasks), "a call finished while the identity was held"
            waiting = await observer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                holder.get_server_pid(),
            )
            await asyncio.sleep(0.01)
        await hold.rollback()
        results = await asyncio.gather(*tasks)
        profiles, identities = await observer.fetchrow(
            "SELECT (SELECT count(*) FROM customer_profiles WHERE tenant_id = $1), "
            "(SELECT count(*) FROM channel_identities WHERE tenant_id = $1)",
            tenant,
        )
    finally:
        for task in tasks:
            task.cancel()  # a no-op for finished ones; stops the rest when an assertion failed
        await holder.close()
        await observer.close()
        await pool.close()
    assert len({profile.id for profile in results}) == 1
    assert results[0].id != held_profile
    assert (profiles, identities) == (1, 1)  # the losers' profiles were rolled back


async def test_failed_merge_leaves_both_profiles_unchanged(private_pool: asyncpg.Pool) -> None:
    store = PostgresProfileStore(private_pool)
    tenant = new_tenant()
    source = await store.get_or_create(tenant, Channel.WEB, "source-user")
    target = await store.get_or_create(tenant, Channel.SMS, "target-user")
    await store.update_field(tenant, target.id, make_field(tenant, target.id, "email", "old@x.io"))
    await store.update_field(tenant, source.id, make_field(tenant, source.id, "email", "new@x.io"))
    await store.add_asset(
        tenant,
        source.id,
        ProfileAsset(tenant_id=tenant, profile_id=source.id, asset_type="order", asset_reference="o1"),
    )
    before = {p: await store.get_by_customer_id(tenant, p) for p in (source.id, target.id)}
    history_before = {p: await store.get_field_history(tenant, p, "email") for p in (source.id, target.id)}
    # Fail at the very last step of the merge, after fields were closed and rows moved.
    await private_pool.execute(
        """
        CREATE FUNCTION fail_merge() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'merge refused for the test'; END $$;
        CREATE TRIGGER fail_merge BEFORE UPDATE OF merged_into_id ON customer_profiles
            FOR EACH ROW WHEN (NEW.merged_into_id IS NOT NULL) EXECUTE FUNCTION fail_merge();
        """
    )
    with pytest.raises(StoreError) as refused:
        await store.merge_profiles(tenant, source.id, target.id)
    # The driver's text stays in the cause (and the log), out of the message clients see.
    assert "merge refused" in str(refused.value.__cause__)
    assert str(refused.value) == "merge_profiles: unexpected database error (SQLSTATE P0001)"
    for profile_id in (source.id, target.id):
        assert await store.get_by_customer_id(tenant, profile_id) == before[profile_id]
        assert await store.get_field_history(tenant, profile_id, "email") == history_before[profile_id]


async def test_cross_tenant_id_clashes_are_conflicts(pg_pool: asyncpg.Pool) -> None:
    store = PostgresProfileStore(pg_pool)
    tenant, other = new_tenant(), new_tenant()
    mine = await store.get_or_create(tenant, Channel.WEB, f"u-{uuid4().hex[:8]}")
    theirs = await store.get_or_create(other, Channel.WEB, f"u-{uuid4().hex[:8]}")
    asset = ProfileAsset(tenant_id=tenant, profile_id=mine.id, asset_type="order", asset_reference="o1")
    await store.add_asset(tenant, mine.id, asset)
    clash = asset.model_copy(update={"tenant_id": other, "profile_id": theirs.id})
    with pytest.raises(ConflictError) as asset_error:
        await store.add_asset(other, theirs.id, clash)
    assert isinstance(asset_error.value.__cause__, asyncpg.UniqueViolationError)
    field = make_field(tenant, mine.id, "email", "a@x.io")
    await store.update_field(tenant, mine.id, field)
    with pytest.raises(ConflictError) as field_error:
        await store.update_field(
            other, theirs.id, field.model_copy(update={"tenant_id": other, "profile_id": theirs.id})
        )
    assert isinstance(field_error.value.__cause__, asyncpg.UniqueViolationError)
    assert await store.get_by_customer_id(other, theirs.id) == theirs


async def test_external_id_unique_violation_is_a_conflict(pg_pool: asyncpg.Pool) -> None:
    store = PostgresProfileStore(pg_pool)
    tenant = new_tenant()
    first = await store.get_or_create(tenant, Channel.WEB, f"u-{uuid4().hex[:8]}")
    second = await store.get_or_create(tenant, Channel.WEB, f"u-{uuid4().hex[:8]}")
    await store.set_external_id(tenant, first.id, "crm-1")
    with pytest.raises(ConflictError) as error:
        await store.set_external_id(tenant, second.id, "crm-1")
    assert isinstance(error.value.__cause__, asyncpg.UniqueViolationError)


async def test_partial_unique_index_allows_one_current_row(pg_pool: asyncpg.Pool) -> None:
    definition = await pg_pool.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'profile_fields_current_key'"
    )
    assert definition is not None
    assert "UNIQUE" in definition
    assert "(tenant_id, profile_id, field_name)" in definition
    assert "WHERE (valid_to IS NULL)" in definition
    store = PostgresProfileStore(pg_pool)
    tenant = new_tenant()
    profile = await store.get_or_create(tenant, Channel.WEB, f"u-{uuid4().hex[:8]}")
    await store.update_field(tenant, profile.id, make_field(tenant, profile.id, "email", "a@x.io"))
    with pytest.raises(asyncpg.UniqueViolationError):
        await pg_pool.execute(
            "INSERT INTO profile_fields (id, tenant_id, profile_id, field_name, field_value, source, "
            "confidence, verified, valid_from) "
            "VALUES ($1, $2, $3, 'email', '\"b\"', 'SYSTEM', 1, false, now())",
            uuid4(),
            tenant,
            profile.id,
        )


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("UPDATE channel_identities SET channel = 'FAX' WHERE profile_id = $1", asyncpg.CheckViolationError),
        ("UPDATE profile_fields SET source = 'GUESSED' WHERE profile_id = $1", asyncpg.CheckViolationError),
        (
            "UPDATE profile_fields SET profile_id = gen_random_uuid() WHERE profile_id = $1",
            asyncpg.ForeignKeyViolationError,
        ),
        ("UPDATE customer_profiles SET merged_into_id = id WHERE id = $1", asyncpg.CheckViolationError),
    ],
)
async def test_constraints_hold_against_raw_sql(
    pg_pool: asyncpg.Pool, statement: str, error: type[Exception]
) -> None:
    store = PostgresProfileStore(pg_pool)
    tenant = new_tenant()
    profile = await store.get_or_create(tenant, Channel.WEB, f"u-{uuid4().hex[:8]}")
    await store.update_field(tenant, profile.id, make_field(tenant, profile.id, "email", "a@x.io"))
    with pytest.raises(error):
        await pg_pool.execute(statement, profile.id)


async def test_delete_cascades_to_every_owned_row_and_alias(pg_pool: asyncpg.Pool) -> None:
    store = PostgresProfileStore(pg_pool)
    tenant = new_tenant()
    alias = await store.get_or_create(tenant, Channel.WEB, f"u-{uuid4().hex[:8]}")
    profile = await store.get_or_create(tenant, Channel.WEB, f"u-{uuid4().hex[:8]}")
    await store.update_field(tenant, profile.id, make_field(tenant, profile.id, "email", "a@x.io"))
    await store.update_field(tenant, profile.id, make_field(tenant, profile.id, "email", "b@x.io"))
    await store.add_asset(
        tenant,
        profile.id,
        ProfileAsset(tenant_id=tenant, profile_id=profile.id, asset_type="o", asset_reference="r"),
    )
    await store.merge_profiles(tenant, alias.id, profile.id)
    assert await store.delete_profile(tenant, profile.id)
    for table in PROFILE_TABLES:
        remaining = await pg_pool.fetchval(f"SELECT count(*) FROM {table} WHERE tenant_id = $1", tenant)
        assert remaining == 0, table


async def test_every_model_field_has_its_own_column(pg_pool: asyncpg.Pool) -> None:
    expected: dict[str, set[str]] = {
        # The profile's lists and dict are rows of the other tables, not columns.
        "customer_profiles": set(CustomerProfile.model_fields) - {"channel_identities", "fields", "assets"},
        "channel_identities": set(ChannelIdentity.model_fields),
        "profile_fields": set(ProfileField.model_fields),
        "profile_assets": set(ProfileAsset.model_fields),
    }
    for table, fields in expected.items():
        rows = await pg_pool.fetch(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1", table
        )
        assert {r["column_name"] for r in rows} == fields, table
    types = {
        (r["table_name"], r["column_name"]): r["data_type"]
        for r in await pg_pool.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ANY($1::text[])",
            list(PROFILE_TABLES),
        )
    }
    assert types[("profile_fields", "field_value")] == "jsonb"
    assert types[("profile_assets", "metadata")] == "jsonb"
    assert types[("profile_fields", "valid_to")] == "timestamp with time zone"


async def test_every_index_starts_with_tenant_id(pg_pool: asyncpg.Pool) -> None:
    rows = await pg_pool.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY($1::text[])", list(PROFILE_TABLES)
    )
    secondary = [r for r in rows if not r["indexname"].endswith("_pkey")]
    assert len(secondary) >= 7
    for row in secondary:
        assert "(tenant_id," in row["indexdef"], row["indexdef"]


async def test_downgrade_to_0003_drops_every_profile_table(database_factory: DatabaseFactory) -> None:
    dsn = await database_factory()
    await downgrade(dsn, "0003")
    connection = await asyncpg.connect(dsn)
    try:
        remaining = await connection.fetchval(
            "SELECT count(*) FROM pg_tables WHERE tablename = ANY($1::text[])", list(PROFILE_TABLES)
        )
        assert remaining == 0
        assert await connection.fetchval("SELECT to_regclass('turn_records') IS NOT NULL")
    finally:
        await connection.close()
