"""``flask token`` / ``manage.py token``: mint a dev-mode bearer token for trying the API."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from app.auth import mint_dev_token

__all__ = ["token_command"]


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


@click.command("token")
@click.option("--user", required=True, help="Username the token names.")
@click.option("--groups", default="", help="Comma-separated groups, e.g. aws-admins,gcp-users.")
@click.option("--roles", default="", help="Comma-separated roles, e.g. tfgen.on_behalf_of.")
@click.option(
    "--ttl", default=3600, show_default=True, type=click.IntRange(1, 86400), help="Seconds."
)
@with_appcontext
def token_command(user: str, groups: str, roles: str, ttl: int) -> None:
    """Print a token signed by the dev key (only with AUTH_MODE=dev)."""
    try:
        token = mint_dev_token(current_app, user, _split(groups), _split(roles), ttl=ttl)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    click.echo(token)
