"""``focal db upgrade | downgrade REV | current | history``: schema management from the shell.

The database is ``--database-url``, else ``FOCAL_DATABASE__URL`` (settings). Without either, the
embedded server in ``--data-dir`` (default ``./.focal``) is used: when ``focal serve`` is already
running on it, its server is reused; otherwise it is started for the command and stopped after.
``--no-embedded`` turns that off, so a missing URL becomes an error instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from focal.errors import FocalError

db_app = typer.Typer(help="Manage the PostgreSQL schema (Alembic migrations).", no_args_is_help=True)

T = TypeVar("T")

# Alembic announces each of its plugins at INFO when imported; keep its "Running upgrade" lines.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option("--database-url", help="PostgreSQL DSN; default: FOCAL_DATABASE__URL", show_default=False),
]
EmbeddedOption = Annotated[
    bool,
    typer.Option("--embedded/--no-embedded", help="Use the embedded server in --data-dir when no URL is set"),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Embedded data directory; default: FOCAL_DATA_DIR or ./.focal"),
]


@contextmanager
def _database(database_url: str | None, embedded: bool, data_dir: Path | None) -> Iterator[str]:
    """The DSN to work on; starts (and afterwards stops) the embedded server when needed."""
    if database_url:
        yield database_url
        return
    from focal.settings import Settings

    settings = Settings.load()
    if settings.database.url:
        yield settings.database.url
        return
    if not embedded:
        raise typer.BadParameter("no database: pass --database-url or set FOCAL_DATABASE__URL")
    from focal.db.embedded import EmbeddedPostgres, replace_database

    postgres_dir = (data_dir or settings.data_dir) / "postgres"
    running = EmbeddedPostgres.find_running(postgres_dir)
    if running is not None:
        yield replace_database(running, "focal")
        return
    server = EmbeddedPostgres(postgres_dir)
    with server:
        yield server.dsn


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(work())
    except FocalError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc


@db_app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
    database_url: DatabaseUrlOption = None,
    embedding_dimensions: Annotated[
        int | None,
        typer.Option(help="vector(D) size for new tables; default: FOCAL_EMBEDDING__DIMENSIONS"),
    ] = None,
    embedded: EmbeddedOption = True,
    data_dir: DataDirOption = None,
) -> None:
    """Upgrade the schema to REVISION (default: head). Safe to run from several processes at once."""
    from focal.db import migrate  # lazy: `focal --help` need not load Alembic

    if embedding_dimensions is None:
        from focal.settings import Settings

        embedding_dimensions = Settings.load().embedding.dimensions
    dimensions = embedding_dimensions
    with _database(database_url, embedded, data_dir) as dsn:
        _run(lambda: migrate.upgrade(dsn, revision, embedding_dimensions=dimensions))
        typer.echo(f"schema at {_run(lambda: migrate.current(dsn))}")


@db_app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, or 'base' to remove everything")],
    database_url: DatabaseUrlOption = None,
    embedded: EmbeddedOption = True,
    data_dir: DataDirOption = None,
) -> None:
    """Downgrade the schema to REVISION."""
    from focal.db import migrate  # lazy: `focal --help` need not load Alembic

    with _database(database_url, embedded, data_dir) as dsn:
        _run(lambda: migrate.downgrade(dsn, revision))
        typer.echo(f"schema at {_run(lambda: migrate.current(dsn)) or 'base'}")


@db_app.command()
def current(
    database_url: DatabaseUrlOption = None,
    embedded: EmbeddedOption = True,
    data_dir: DataDirOption = None,
) -> None:
    """Print the database's revision and how it compares with the code."""
    from focal.db import migrate  # lazy: `focal --help` need not load Alembic

    with _database(database_url, embedded, data_dir) as dsn:
        status = _run(lambda: migrate.schema_status(dsn))
    typer.echo(f"{status.current or 'base'} ({status.state.value}; code head {status.head})")


@db_app.command()
def history() -> None:
    """List the revisions this code knows, oldest first."""
    from focal.db import migrate  # lazy: `focal --help` need not load Alembic

    for info in migrate.history():
        typer.echo(f"{info.down_revision or 'base'} -> {info.revision}: {info.description.splitlines()[0]}")
