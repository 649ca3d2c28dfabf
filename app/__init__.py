"""tfgen's application factory: ``create_app`` builds the API from small steps.

Nothing connects at import time: the database, Redis and the broker are reached on
first use, so gunicorn and Celery can fork safely after ``create_app``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from celery import Celery, Task
from flask import Blueprint, Flask, Response, g, request

from app.auth import init_auth, register_swagger_ui
from app.extensions import api_v1
from app.logs import configure_logging, reset_context
from app.services import Services
from config.settings import SETTINGS_KEY, ConfigError, load_settings

__all__ = ["celery_init_app", "create_app", "never_wait_on_results"]

_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the Flask application.

    Args:
        config: Overrides on top of the environment (tests pass a test configuration).

    Returns:
        The application, with the Celery app at ``app.extensions["celery"]``.
    """
    app = Flask(__name__)
    app.config.update(load_settings(overrides=config))
    register_logging(app)
    # First, so that every answer (a 401 from the sign-in guard too) carries the id.
    register_request_hooks(app)
    register_extensions(app)
    register_apis(app)
    register_cli(app)
    return app


def register_logging(app: Flask) -> None:
    """Structured logs (``LOG_FORMAT``, ``LOG_LEVEL``) for this process; see ``app.logs``."""
    try:
        # Frame locals in tracebacks only in dev: a local can hold a token.
        configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"],
                          show_locals=app.config["APP_ENV"] == "dev")
    except ValueError as e:
        raise ConfigError(str(e)) from e


def register_extensions(app: Flask) -> None:
    """Bind the domain services, Celery and authentication to the app."""
    require_database_driver(app.config["DATABASE_URL"])
    _make_embedded_dirs(app.config)
    services = app.extensions["tfgen"] = Services(app.config)
    celery = celery_init_app(app)
    services.on_event = webhook_notifier(services, celery, app.config["WEBHOOK_QUEUE"])
    try:
        init_auth(app)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def webhook_notifier(services: Services, celery: Celery, queue: str) -> Callable[[str], None]:
    """After an event is appended, ask the webhook queue for a fan-out (when any exist)."""
    from tasks.deliver import submit_fan_out  # tasks import app's modules: bind late

    def notify(cursor: str) -> None:
        webhooks = services.webhooks
        if webhooks is not None and webhooks.any():
            submit_fan_out(celery, queue)
    return notify


def require_database_driver(url: str) -> None:
    """Stop at start, naming the package, when ``DATABASE_URL``'s driver is not installed.

    Raises:
        ConfigError: The URL does not parse, or its dialect or driver cannot be imported.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        parsed.get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError) as e:
        raise ConfigError(f"DATABASE_URL is not a usable SQLAlchemy URL: {e}") from e
    except ImportError as e:
        package = _DRIVER_PACKAGES.get(e.name or "", e.name or parsed.drivername)
        raise ConfigError(
            f"DATABASE_URL uses {parsed.drivername}, whose driver is not installed: "
            f"pip install {package}") from e


# Python module -> what to pip install (where the names differ).
_DRIVER_PACKAGES = {"psycopg": "'psycopg[binary]'",
                    "psycopg2": "psycopg2-binary (or write postgresql+psycopg://)",
                    "MySQLdb": "mysqlclient", "cx_Oracle": "oracledb (and use oracle+oracledb)"}


def _make_embedded_dirs(config: Mapping[str, Any]) -> None:
    # The embedded defaults keep their files under VAR_DIR: make the folders they need.
    options = config["CELERY"]["broker_transport_options"]
    folders = [config["VAR_DIR"], options.get("data_folder_in"), options.get("processed_folder"),
               options.get("control_folder")]
    backend = str(config["CELERY"].get("result_backend") or "")
    if backend.startswith("file://"):
        folders.append(backend.removeprefix("file://"))
    for folder in filter(None, folders):
        Path(folder).mkdir(parents=True, exist_ok=True)


def register_apis(app: Flask) -> None:
    """Mount ``/api/v1`` (flask-restx, Swagger UI at ``/api/v1/docs``) and the probes."""
    from app.apis import (  # noqa: F401 - registers the routes
        events,
        generate,
        hooks,
        jobs,
        requests,
        templates,
        terraform,
        waivers,
        webhooks,
    )
    from app.apis.bodies import register_body_limits
    from app.apis.errors import register_error_handlers
    from app.apis.health import bp as health_bp
    from app.metrics import register_metrics

    blueprint = Blueprint("api_v1", __name__, url_prefix="/api/v1")
    api = api_v1()
    api.init_app(blueprint)
    api.add_namespace(terraform.ns)
    api.add_namespace(jobs.ns)
    api.add_namespace(waivers.ns)
    api.add_namespace(webhooks.ns)
    api.add_namespace(requests.ns)
    api.add_namespace(events.ns)
    api.add_namespace(hooks.ns)
    register_error_handlers(api, app)
    register_body_limits(app)
    register_swagger_ui(app, api)
    app.register_blueprint(blueprint)
    app.register_blueprint(health_bp)
    app.extensions["restx_api"] = api
    register_metrics(app)


def register_request_hooks(app: Flask) -> None:
    """Carry ``X-Correlation-ID`` from the request (or a new one) onto every response
    and every log line of the request."""

    @app.before_request
    def take_correlation_id() -> None:
        # The environ directly: Werkzeug's headers raise and catch a KeyError when absent.
        given = request.environ.get("HTTP_X_CORRELATION_ID", "")
        g.correlation_id = given if _CORRELATION_ID.match(given) else uuid.uuid4().hex
        reset_context(correlation_id=g.correlation_id)

    @app.teardown_request
    def forget_log_context(_: BaseException | None) -> None:
        reset_context()

    @app.after_request
    def give_correlation_id(response: Response) -> Response:
        response.headers["X-Correlation-ID"] = g.get("correlation_id") or uuid.uuid4().hex
        return response


def register_cli(app: Flask) -> None:
    """Add the ``init-db``, ``templates``, ``policy``, ``token`` and ``export-swagger`` commands."""
    from app.cli import export_swagger_command, init_db_command, policy_group, templates_group
    from app.cli_token import token_command

    app.cli.add_command(init_db_command)
    app.cli.add_command(templates_group)
    app.cli.add_command(policy_group)
    app.cli.add_command(token_command)
    app.cli.add_command(export_swagger_command)


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app the way Flask's docs wire it: tasks run in the app context."""

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    from tasks.periodic import beat_schedule  # beside the tasks it names

    app.config["CELERY"].setdefault("beat_schedule", beat_schedule(app.config[SETTINGS_KEY]))
    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    celery_app.flask_app = app  # signal handlers in the worker's main process need it
    app.extensions["celery"] = celery_app
    return celery_app


def never_wait_on_results() -> None:
    """Mark this process as one that never waits on a Celery result (a gunicorn worker).

    Otherwise Celery's Redis result backend subscribes, on every ``send_task``, to the
    task's result channel (so that a later ``.get()`` would hear it) and unsubscribes
    when the ``AsyncResult`` is collected: two Redis commands and about a tenth of a
    submit's time for a result the API never reads (it serves the job record). Celery
    marks its own pool processes the same way; ``.get()`` then raises instead of waiting.
    """
    from celery._state import _set_task_join_will_block

    _set_task_join_will_block(True)
