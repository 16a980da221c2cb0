"""The ``focal`` command: a registry of sub-commands, each defined in its own module."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import typer

from focal.db.cli import db_app
from focal.serve import register_commands

app = typer.Typer(help="Focal: a multi-tenant runtime for conversational agents.", no_args_is_help=True)
app.add_typer(db_app, name="db")
register_commands(app)  # serve, demo, token


@app.callback()
def main() -> None:
    """Set up logging (to stderr, so command output on stdout stays clean) from settings."""
    from pydantic import ValidationError

    from focal.errors import FocalError
    from focal.logging import configure_logging
    from focal.settings import Settings

    try:
        settings = Settings.load()
    except ValidationError as exc:  # an invalid setting: one line per problem, not a traceback
        problems = [f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()]
        typer.echo("error: invalid configuration:\n" + "\n".join(problems), err=True)
        raise typer.Exit(code=1) from exc
    except FocalError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    configure_logging(settings.logging.level, json_output=settings.logging.json_output)


@app.command()
def version() -> None:
    """Print Focal's version."""
    try:
        typer.echo(package_version("focal"))
    except PackageNotFoundError:
        typer.echo("unknown (not installed as a package)")


if __name__ == "__main__":
    app()
