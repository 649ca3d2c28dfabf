"""Management commands, registered on the app (``flask`` / ``python manage.py``)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from app.core.lint import lint_templates
from app.core.schema import init_schema, load_demo
from app.services import Services


@click.command("init-db")
@click.option("--demo", is_flag=True, help="Also load realistic sample requests and templates.")
@with_appcontext
def init_db_command(demo: bool) -> None:
    """Create the APEX schema (tables and views) on SQLite or PostgreSQL for development."""
    svc: Services = current_app.extensions["tfgen"]
    engine = svc.store.engine
    if engine.dialect.name == "oracle":
        raise click.ClickException("refusing to create tables in Oracle: APEX owns that schema")
    schema = svc.store.settings.schema
    init_schema(engine, schema=schema)
    if demo:
        load_demo(engine, schema=schema)
    where = engine.url.render_as_string(hide_password=True) + (f" (schema {schema})"
                                                                if schema else "")
    click.echo(f"schema ready on {where}" + (" with demo data" if demo else ""))


@click.group("templates")
def templates_group() -> None:
    """Work with the Jinja templates in the APEX database."""


@templates_group.command("lint")
@with_appcontext
def lint_command() -> None:
    """Compile, render against a sample row and check every template; exit 1 on findings.

    One line per finding on stdout: ``<cloud>/<type>@<version>:<line>: <message>``.
    """
    svc: Services = current_app.extensions["tfgen"]
    checked = problems = 0
    for template, findings, rendered in lint_templates(svc.store):
        checked += 1
        problems += len(findings)
        for finding in findings:
            click.echo(str(finding))
        if not rendered:
            click.echo(f"{template.ref}: note: no request row to render against", err=True)
    click.echo(f"{checked} template(s) checked, {problems} finding(s)", err=True)
    if problems:
        raise SystemExit(1)
