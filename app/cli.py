"""Management commands, registered on the app (``flask`` / ``python manage.py``)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from app.core.policy import PolicyEngine
from app.core.publish.git import init_bare_remote, is_local_path
from app.core.render.lint import lint_templates
from app.core.store.schema import init_schema
from app.demo import RESOURCE_TYPES, load_demo
from app.errors import PolicyError
from app.services import Services
from config.settings import ROOT

__all__ = ["export_swagger_command", "init_db_command", "lint_command", "policy_group",
           "render_spec", "swagger_spec", "templates_group"]

# The spec the repository keeps (tests compare it with the live one). Export it from a
# configuration without an IdP (APP_ENV=test or dev): with OIDC the spec also declares
# the IdP's OAuth2 URLs, which belong to a deployment, not to the API.
DEFAULT_SPEC = ROOT / "swagger" / "swagger.json"


@click.command("init-db")
@click.option("--demo", is_flag=True, help="Also load realistic sample requests and templates.")
@with_appcontext
def init_db_command(demo: bool) -> None:
    """Create the APEX schema (tables and views) on SQLite or PostgreSQL for development.

    With ``--demo`` and ``PUBLISHER=git``, also create ``GIT_REMOTE`` (a bare repository
    with the target branch) when it is a local path that does not exist yet.
    """
    svc: Services = current_app.extensions["tfgen"]
    engine = svc.store.engine
    if engine.dialect.name == "oracle":
        raise click.ClickException("refusing to create tables in Oracle: APEX owns that schema")
    schema = svc.store.settings.schema
    init_schema(engine, RESOURCE_TYPES, schema=schema)
    if demo:
        load_demo(engine, schema=schema)
    where = engine.url.render_as_string(hide_password=True) + (f" (schema {schema})"
                                                                if schema else "")
    click.echo(f"schema ready on {where}" + (" with demo data" if demo else ""))
    remote = current_app.config.get("GIT_REMOTE") or ""
    if demo and current_app.config["PUBLISHER"] == "git" and is_local_path(remote):
        target = current_app.config["GITLAB_TARGET_BRANCH"]
        if init_bare_remote(Path(remote), target):
            click.echo(f"git remote {remote} created with a {target} branch")


@click.group("templates")
def templates_group() -> None:
    """Work with the Jinja templates in the APEX database."""


@templates_group.command("lint")
@with_appcontext
def lint_command() -> None:
    """Compile, render against a sample row and check every template; exit 1 on findings.

    One line per finding on stdout: ``<cloud>/<type>@<version>:<line>: <message>``;
    warnings (a list or flag column printed bare) read ``...: warning: <message>`` and
    do not change the exit status.
    """
    svc: Services = current_app.extensions["tfgen"]
    checked = problems = warnings = 0
    for template, findings, rendered in lint_templates(svc.store):
        checked += 1
        for finding in findings:
            click.echo(str(finding))
            if finding.severity == "warning":
                warnings += 1
            else:
                problems += 1
        if not rendered:
            click.echo(f"{template.ref}: note: no request row to render against", err=True)
    click.echo(f"{checked} template(s) checked, {problems} finding(s), {warnings} warning(s)",
               err=True)
    if problems:
        raise SystemExit(1)


@click.group("policy")
def policy_group() -> None:
    """Work with the Rego policies of POLICY_DIR."""


_policy_dir_option = click.option(
    "--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
    help="The policy folder (default: POLICY_DIR).")


def _policy_command(name: str) -> Callable[[Callable[[PolicyEngine], None]], click.Command]:
    """A ``policy <name>`` command taking ``--dir``: the function gets the folder's engine,
    and a policy that does not compile exits 1 with its message."""

    def decorate(action: Callable[[PolicyEngine], None]) -> click.Command:
        @functools.wraps(action)
        def command(folder: Path | None) -> None:
            engine = PolicyEngine(folder or current_app.config.get("POLICY_DIR"))
            if not engine.enabled:
                raise click.ClickException("no policies: set POLICY_DIR or pass --dir")
            try:
                action(engine)
            except PolicyError as e:
                click.echo(e.message)
                raise SystemExit(1) from e

        return policy_group.command(name)(_policy_dir_option(with_appcontext(command)))

    return decorate


@_policy_command("lint")
def policy_lint_command(engine: PolicyEngine) -> None:
    """Compile every policy; exit 1 naming file and line when one does not compile."""
    sources = engine.check()
    for source in sources:
        click.echo(f"{source.file}: ok")
    click.echo(f"{len(sources)} policy file(s) compiled", err=True)


@_policy_command("test")
def policy_test_command(engine: PolicyEngine) -> None:
    """Run the *_test.json cases beside the policies; exit 1 when one fails."""
    outcomes = engine.run_tests()
    for outcome in outcomes:
        click.echo(f"{'PASS' if outcome.passed else 'FAIL'} {outcome.file}: {outcome.name}")
        for problem in outcome.problems:
            click.echo(f"    {problem}")
    failed = sum(not o.passed for o in outcomes)
    click.echo(f"{len(outcomes)} case(s), {failed} failed", err=True)
    if failed or not outcomes:
        raise SystemExit(1)


def swagger_spec() -> dict[str, Any]:
    """The spec ``/api/v1/swagger.json`` serves, built in a request context as restx does."""
    api = current_app.extensions["restx_api"]
    with current_app.test_request_context("/api/v1/swagger.json"):
        spec: dict[str, Any] = api.__schema__
    # A JSON round trip gives the exact structure the endpoint answers (tuples -> lists).
    return dict(json.loads(json.dumps(spec)))


def render_spec(spec: Mapping[str, Any]) -> str:
    """The committed file's text: sorted keys, two-space indent, newline at the end."""
    return json.dumps(spec, indent=2, sort_keys=True) + "\n"


@click.command("export-swagger")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_SPEC, show_default=True, help="Where to write; - for stdout.")
@click.option("--check", is_flag=True,
              help="Write nothing; fail when the file differs from the live spec.")
@with_appcontext
def export_swagger_command(output: Path, check: bool) -> None:
    """Write the API's Swagger spec (what /api/v1/swagger.json serves) to a file."""
    text = render_spec(swagger_spec())
    if str(output) == "-":
        click.echo(text, nl=False)
        return
    if check:
        current = output.read_text() if output.exists() else ""
        if current != text:
            raise click.ClickException(
                f"{output} is not the live spec: run `python manage.py export-swagger`")
        click.echo(f"{output} is up to date")
        return
    output.write_text(text)
    click.echo(f"wrote {output}")
