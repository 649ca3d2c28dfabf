"""WSGI entry and CLI: ``gunicorn manage:app``; ``python manage.py init-db --demo``."""

from __future__ import annotations

from flask.cli import FlaskGroup

from app import create_app

app = create_app()
cli = FlaskGroup(create_app=lambda: app)

if __name__ == "__main__":
    cli()
