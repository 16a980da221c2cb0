"""Human handoff: the rule flag, webhook endpoints and their deliveries.

Revision ID: 0009
Revises: 0008

- ``rules.requests_handoff boolean NOT NULL DEFAULT false``: a turn matching such a rule answers,
  then switches the session to MANUAL and emits ``session.handoff_requested``. Existing rules
  request nothing.
- ``webhook_endpoints``: a tenant's receivers (url, the event types they take, enabled) with the
  signing secret Focal generated (returned once over the API, never again) and a ``revision``
  (ETag / If-Match, like the config tables). ``UNIQUE (tenant_id, id)`` lets deliveries reference
  an endpoint of their own tenant only.
- ``webhook_deliveries``: one row per event and endpoint, the exact body sent on every attempt,
  its status (PENDING until delivered or out of attempts), the attempt count, when the next
  attempt is due and until when a process holds it (``lease_until``: a process that dies leaves
  the lease to expire and any process's sweep takes the delivery over). Each attempt is also an
  audit event (``webhook_delivery_attempted``). Deliveries go with their endpoint (CASCADE).

Downgrade drops both tables and the column (pending deliveries are lost with them).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE rules ADD COLUMN requests_handoff boolean NOT NULL DEFAULT false")
    op.execute(
        """
        CREATE TABLE webhook_endpoints (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            url text NOT NULL CHECK (char_length(url) BETWEEN 1 AND 2048),
            event_types text[] NOT NULL CHECK (cardinality(event_types) >= 1),
            description text CHECK (char_length(description) <= 1000),
            enabled boolean NOT NULL DEFAULT true,
            secret text NOT NULL CHECK (char_length(secret) >= 32),
            revision integer NOT NULL DEFAULT 1 CHECK (revision >= 1),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT webhook_endpoints_tenant_id_id_key UNIQUE (tenant_id, id)
        )
        """
    )
    op.execute(
        "CREATE INDEX webhook_endpoints_tenant_created_idx ON webhook_endpoints (tenant_id, created_at, id)"
    )
    op.execute(
        """
        CREATE TABLE webhook_deliveries (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            endpoint_id uuid NOT NULL,
            event_id uuid NOT NULL,
            event_type text NOT NULL CHECK (char_length(event_type) BETWEEN 1 AND 100),
            session_id uuid,
            payload text NOT NULL,
            status text NOT NULL CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED')),
            attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            next_attempt_at timestamptz,
            lease_until timestamptz,
            last_status_code integer CHECK (last_status_code BETWEEN 100 AND 599),
            last_error text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT webhook_deliveries_endpoint_fkey FOREIGN KEY (tenant_id, endpoint_id)
                REFERENCES webhook_endpoints (tenant_id, id) ON DELETE CASCADE,
            CONSTRAINT webhook_deliveries_event_endpoint_key UNIQUE (event_id, endpoint_id)
        )
        """
    )
    op.execute(
        "CREATE INDEX webhook_deliveries_endpoint_idx "
        "ON webhook_deliveries (tenant_id, endpoint_id, created_at DESC, id)"
    )
    op.execute(
        "CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) "
        "WHERE status = 'PENDING'"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS webhook_deliveries")
    op.execute("DROP TABLE IF EXISTS webhook_endpoints")
    op.execute("ALTER TABLE rules DROP COLUMN requests_handoff")
