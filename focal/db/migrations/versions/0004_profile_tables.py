"""Profile tables: customer_profiles, channel_identities, profile_fields, profile_assets.

Revision ID: 0004
Revises: 0003

Children reference their profile through (tenant_id, profile_id) -> customer_profiles (tenant_id,
id), so a row can never point at another tenant's profile, and ``ON DELETE CASCADE`` makes
erasing a profile one statement. ``merged_into_id`` uses the same composite key: deleting a
profile also deletes the profiles merged into it. ``profile_fields`` keeps every value a field
has had; the partial unique index allows at most one current row (``valid_to IS NULL``) per
(tenant_id, profile_id, field_name).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the enum values at this revision (a migration must not follow later code).
CHANNELS = ("WEB", "API", "WHATSAPP", "SLACK", "EMAIL", "SMS", "VOICE")
FIELD_SOURCES = ("USER_PROVIDED", "EXTRACTED", "INFERRED", "SYSTEM")


def _in(values: Sequence[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE customer_profiles (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            external_id text CHECK (char_length(external_id) BETWEEN 1 AND 255),
            merged_into_id uuid,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            CONSTRAINT customer_profiles_tenant_id_key UNIQUE (tenant_id, id),
            CONSTRAINT customer_profiles_merged_into_fkey FOREIGN KEY (tenant_id, merged_into_id)
                REFERENCES customer_profiles (tenant_id, id) ON DELETE CASCADE,
            CONSTRAINT customer_profiles_not_merged_into_self CHECK (merged_into_id <> id)
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX customer_profiles_tenant_external_id_key "
        "ON customer_profiles (tenant_id, external_id) WHERE external_id IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX customer_profiles_tenant_merged_into_idx "
        "ON customer_profiles (tenant_id, merged_into_id) WHERE merged_into_id IS NOT NULL"
    )
    op.execute(
        f"""
        CREATE TABLE channel_identities (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            profile_id uuid NOT NULL,
            channel text NOT NULL CHECK (channel IN ({_in(CHANNELS)})),
            channel_user_id text NOT NULL CHECK (char_length(channel_user_id) BETWEEN 1 AND 255),
            verified boolean NOT NULL,
            created_at timestamptz NOT NULL,
            CONSTRAINT channel_identities_tenant_channel_user_key
                UNIQUE (tenant_id, channel, channel_user_id),
            CONSTRAINT channel_identities_profile_fkey FOREIGN KEY (tenant_id, profile_id)
                REFERENCES customer_profiles (tenant_id, id) ON DELETE CASCADE
        )
        """
    )
    op.execute(
        "CREATE INDEX channel_identities_tenant_profile_idx "
        "ON channel_identities (tenant_id, profile_id, created_at, id)"
    )
    op.execute(
        f"""
        CREATE TABLE profile_fields (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            profile_id uuid NOT NULL,
            field_name text NOT NULL CHECK (char_length(field_name) BETWEEN 1 AND 255),
            field_value jsonb NOT NULL,
            source text NOT NULL CHECK (source IN ({_in(FIELD_SOURCES)})),
            confidence double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
            verified boolean NOT NULL,
            valid_from timestamptz NOT NULL,
            valid_to timestamptz,
            CONSTRAINT profile_fields_period_ordered CHECK (valid_to IS NULL OR valid_to >= valid_from),
            CONSTRAINT profile_fields_profile_fkey FOREIGN KEY (tenant_id, profile_id)
                REFERENCES customer_profiles (tenant_id, id) ON DELETE CASCADE
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX profile_fields_current_key "
        "ON profile_fields (tenant_id, profile_id, field_name) WHERE valid_to IS NULL"
    )
    op.execute(
        "CREATE INDEX profile_fields_tenant_profile_history_idx "
        "ON profile_fields (tenant_id, profile_id, field_name, valid_from, id)"
    )
    op.execute(
        """
        CREATE TABLE profile_assets (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            profile_id uuid NOT NULL,
            asset_type text NOT NULL CHECK (char_length(asset_type) BETWEEN 1 AND 100),
            asset_reference text NOT NULL CHECK (char_length(asset_reference) >= 1),
            metadata jsonb NOT NULL,
            created_at timestamptz NOT NULL,
            CONSTRAINT profile_assets_profile_fkey FOREIGN KEY (tenant_id, profile_id)
                REFERENCES customer_profiles (tenant_id, id) ON DELETE CASCADE
        )
        """
    )
    op.execute(
        "CREATE INDEX profile_assets_tenant_profile_idx "
        "ON profile_assets (tenant_id, profile_id, created_at, id)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS profile_assets")
    op.execute("DROP TABLE IF EXISTS profile_fields")
    op.execute("DROP TABLE IF EXISTS channel_identities")
    op.execute("DROP TABLE IF EXISTS customer_profiles")
