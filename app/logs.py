"""Structured logs: structlog over stdlib ``logging``, one line per event, JSON or console.

Every process (gunicorn worker, Celery worker, CLI) calls ``configure_logging`` once it
knows its settings. Lines from structlog loggers and from plain stdlib loggers (ours,
Celery's, gunicorn's, libraries') go through the same processors, so all of them carry
the fields bound in the current context:

- in the API, ``correlation_id`` for the request, then ``job_uuid``, ``user``,
  ``cloud_id``, ``resource_type`` and ``request_id`` once the job is known;
- in a Celery task, the same fields, bound by the signals in ``tasks/observe.py``.

Audit events (``audit``) are log records whose ``event`` is ``audit.<action>``, on the
``tfgen.audit`` logger, so operators can ship them apart from the rest.

No secrets: values of keys that look like credentials are masked before rendering.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import IO, Any

import structlog
import structlog.tracebacks
from structlog.contextvars import bind_contextvars, clear_contextvars, merge_contextvars
from structlog.typing import EventDict, Processor, WrappedLogger

from app.core.lru import BoundedLRU

__all__ = [
    "JOB_FIELDS",
    "access_atoms",
    "audit",
    "bind_job",
    "configure_logging",
    "get_logger",
    "remember_task_correlation",
    "reset_context",
]

# The fields that tie a line to a job; documented in docs/operations.md.
JOB_FIELDS = ("correlation_id", "job_uuid", "user", "cloud_id", "resource_type", "request_id")

_SECRET_KEY = re.compile(r"(token|password|passwd|secret|authorization|api_key|cookie)",
                         re.IGNORECASE)
_TASK_ID_IN_TEXT = re.compile(
    r"\[([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\]")
_HANDLER_MARK = "_tfgen_handler"

# Celery's worker main process logs "Task ...[uuid] received" before any signal runs in a
# task context; a custom Request class records the message's correlation id here first.
_TASK_CORRELATION: BoundedLRU[str, str] = BoundedLRU(10_000)


def get_logger(name: str) -> Any:
    """A structlog logger that renders through the stdlib handler ``configure_logging`` sets."""
    return structlog.stdlib.get_logger(name)


def reset_context(**fields: Any) -> None:
    """Forget every bound field and bind ``fields`` (start of a request or a task)."""
    clear_contextvars()
    bind_contextvars(**{k: v for k, v in fields.items() if v is not None})


def bind_job(job_uuid: str, owner: str | None, request: Mapping[str, Any],
             correlation_id: str | None = None) -> None:
    """Bind a job's identity to the current context, for every following line.

    Args:
        job_uuid: The job's UUID.
        owner: The user the job acts for.
        request: The job's request (``cloud_id``, ``resource_type``, ``request_id``).
        correlation_id: Bound too when given (the worker takes it from the message).
    """
    fields: dict[str, Any] = {
        "job_uuid": job_uuid, "user": owner, "cloud_id": request.get("cloud_id"),
        "resource_type": request.get("resource_type"), "request_id": request.get("request_id"),
    }
    if correlation_id:
        fields["correlation_id"] = correlation_id
    bind_contextvars(**{k: v for k, v in fields.items() if v is not None})


_AUDIT = structlog.stdlib.get_logger("tfgen.audit")


def audit(action: str, outcome: str, **fields: Any) -> None:
    """Write one audit record: who did what to which job, and how it ended.

    The record carries the bound job fields (``correlation_id``, ``job_uuid``, ``user``,
    ``cloud_id``, ``resource_type``, ``request_id``) plus ``fields``; never a secret.

    Args:
        action: ``submit``, ``cancel``, ``publish`` or ``failure``.
        outcome: ``accepted``, ``requested``, ``success``, ``failure``, ``canceled``...
        **fields: Action details (merge request URL, commit, error code...).
    """
    _AUDIT.info(f"audit.{action}", audit=True, action=action, outcome=outcome, **fields)


def remember_task_correlation(task_id: str, correlation_id: str | None) -> None:
    """Note a queued task's correlation id, for lines Celery logs outside the task."""
    if not correlation_id:
        return
    _TASK_CORRELATION.put(task_id, correlation_id)


def _task_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Give Celery's own lines about a task (received, succeeded...) its job fields."""
    record = event_dict.get("_record")
    if record is None or "job_uuid" in event_dict:
        return event_dict
    data = getattr(record, "data", None)
    task_id = data.get("id") if isinstance(data, Mapping) else None
    if task_id is None and record.name.startswith("celery"):
        match = _TASK_ID_IN_TEXT.search(str(event_dict.get("event", "")))
        task_id = match.group(1) if match else None
    if task_id:
        event_dict["job_uuid"] = task_id
        correlation_id = _TASK_CORRELATION.get(task_id)
        if correlation_id and "correlation_id" not in event_dict:
            event_dict["correlation_id"] = correlation_id
    return event_dict


def _gunicorn_access(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Turn gunicorn's access-log atoms into fields (``config/gunicorn_conf.py``)."""
    record = event_dict.get("_record")
    atoms = event_dict.pop("positional_args", None)  # the record's args (pass_foreign_args)
    if record is None or record.name != "gunicorn.access" or not isinstance(atoms, Mapping):
        return event_dict
    event_dict.update(_access_fields(atoms))
    correlation_id = atoms.get("{x-correlation-id}o")
    if correlation_id and correlation_id != "-":
        event_dict.setdefault("correlation_id", correlation_id)
    return event_dict


def _access_fields(atoms: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "event": "http.access",
        "method": atoms.get("m"),
        "path": atoms.get("U"),
        "status": atoms.get("s"),
        "duration_ms": round(int(atoms.get("D", 0)) / 1000, 3),
        "bytes": atoms.get("B"),
        "remote_addr": atoms.get("h"),
        "user_agent": atoms.get("a"),
    }


def access_atoms(status: str | int, sent: int | None, headers: Any,
                 environ: Mapping[str, Any], micros: int) -> dict[str, Any]:
    """The gunicorn access atoms the access line is made of, and no others.

    gunicorn's ``Logger.atoms`` builds about forty per request (a time string, every
    request and response header, every environ variable), about half of an access line's
    cost; the line keeps eight (``_access_fields``). Each value is the one gunicorn gives
    (``config/gunicorn_conf.py`` uses this; ``tests/test_logs.py`` compares both).

    Args:
        status: The response status (``"200 OK"`` or 200).
        sent: Body bytes written (gunicorn's ``resp.sent``).
        headers: The response headers, ``(name, value)`` pairs.
        environ: The request's WSGI environ.
        micros: The request's duration in microseconds.
    """
    if isinstance(status, str):
        status = status.split(None, 1)[0]
    atoms: dict[str, Any] = {
        "h": environ.get("REMOTE_ADDR", "-"), "s": status,
        "m": environ.get("REQUEST_METHOD"), "U": environ.get("PATH_INFO"),
        "B": sent, "a": environ.get("HTTP_USER_AGENT", "-"), "D": micros,
    }
    for name, value in headers:
        if name.lower() == "x-correlation-id":
            atoms["{x-correlation-id}o"] = value
    return atoms


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def _mask_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key in list(event_dict):
        if _is_secret_key(key) and event_dict[key] not in (None, ""):
            event_dict[key] = "***"
    return event_dict


def _lead_with_essentials(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Put time, level, logger and event first: lines read left to right."""
    first = {k: event_dict.pop(k) for k in ("timestamp", "level", "logger", "event")
             if k in event_dict}
    return {**first, **event_dict}


def _shared_processors() -> list[Processor]:
    return [
        merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        _task_fields,
        _gunicorn_access,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
    ]


class _JSONFormatter(structlog.stdlib.ProcessorFormatter):
    """The JSON ``ProcessorFormatter``, writing its two most frequent lines directly.

    - gunicorn's access line, written on every request: through the processors it cost
      about three times the request's own logging (a copy of the record, the foreign
      chain, the JSON renderer). Its shape is fixed, so it is built here.
    - a structlog line (the audit line, a job's lines): structlog's chain has already
      made its event dict; what is left is to drop the meta keys, put the essentials first
      and render. ``ProcessorFormatter`` first copies the whole record (a second
      ``LogRecord``) and runs its processors one by one: half of the line's formatting.

    Each equals what the processors make of the record (``tests/test_logs.py`` compares
    both). A record carrying anything else (bound context on an access line, an exception,
    a stack) takes the processors.
    """

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.stack_info:
            return super().format(record)
        event = record.msg
        if getattr(record, "_logger", None) is not None and isinstance(event, dict):
            if "exc_info" in event or "exception" in event:
                return super().format(record)
            line = _lead_with_essentials(None, "", dict(event))
            return json.dumps(line, default=str)
        atoms = record.args
        if (record.name != "gunicorn.access" or record.levelno != logging.INFO
                or not isinstance(atoms, Mapping) or structlog.contextvars.get_contextvars()):
            return super().format(record)
        line = {"timestamp": None, "level": "info", "logger": record.name}
        line.update(_access_fields(atoms))
        correlation_id = atoms.get("{x-correlation-id}o")
        if correlation_id and correlation_id != "-":
            line["correlation_id"] = correlation_id
        _STAMPER(None, "", line)  # type: ignore[arg-type]
        return json.dumps(line, default=str)


_STAMPER = structlog.processors.TimeStamper(fmt="iso", utc=True)


def make_formatter(fmt: str = "json", show_locals: bool = False,
                   fast: bool = True) -> logging.Formatter:
    """The formatter of every handler: JSON (one object per line) or console text.

    Args:
        fmt: ``json`` or ``console``.
        show_locals: Print each traceback frame's local variables. Off unless asked
            (only dev asks): a local can hold a token or a password.
        fast: Write gunicorn's access lines and structlog's lines without the
            processors (JSON only; the same lines, see ``_JSONFormatter``).
    """
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(default=str)
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=show_locals))
        final: list[Processor] = [tracebacks, _lead_with_essentials, renderer]
    elif fmt == "console":
        final = [structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=_console_tracebacks(show_locals))]
    else:
        raise ValueError(f"LOG_FORMAT must be json or console, got {fmt!r}")
    formatter = _JSONFormatter if fmt == "json" and fast else (
        structlog.stdlib.ProcessorFormatter)
    return formatter(
        foreign_pre_chain=_shared_processors(),
        pass_foreign_args=True,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )


def _console_tracebacks(show_locals: bool) -> structlog.typing.ExceptionRenderer:
    if show_locals and importlib.util.find_spec("rich") is not None:
        return structlog.dev.RichTracebackFormatter(show_locals=True)
    return structlog.dev.plain_traceback


def configure_logging(level: str = "INFO", fmt: str = "console",
                      stream: IO[str] | None = None, show_locals: bool = False) -> None:
    """Route structlog and stdlib logging to one handler on the root logger.

    Idempotent: a second call replaces the handler it installed before and leaves
    other handlers alone (pytest's, for one).

    Args:
        level: Root level name (``LOG_LEVEL``).
        fmt: ``json`` or ``console`` (``LOG_FORMAT``).
        stream: Where lines go; the process's real stderr by default (not a replacement
            Celery or a test runner may have installed in ``sys.stderr``), so that a
            command's own output on stdout (``manage.py token``) stays clean.
        show_locals: Print frame locals in tracebacks (dev only: see ``make_formatter``).

    Raises:
        ValueError: Unknown level or format.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"LOG_LEVEL must be a logging level name, got {level!r}")
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # The processors are the same on every call, so a logger may keep them: binding
        # them anew on every line cost more than the line's own processing.
        cache_logger_on_first_use=True,
    )
    # No line shows the thread, the process or the calling source line, so records need
    # not look them up: the logging HOWTO's "Optimization" settings (a third of a
    # record's creation, on every line).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # type: ignore[attr-defined]  # the HOWTO names it
    handler = logging.StreamHandler(stream or sys.__stderr__ or sys.stderr)
    handler.setFormatter(make_formatter(fmt, show_locals))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)


def context_snapshot() -> MutableMapping[str, Any]:
    """The fields bound in the current context (for tests and error reports)."""
    return structlog.contextvars.get_contextvars()
