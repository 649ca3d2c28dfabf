"""``manage.py templates lint`` against a SQLite APEX schema with the demo data."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from flask import Flask

from app import create_app
from tests.conftest import sqlite_apex

BAD_TEMPLATES = {
    "9.0.0": ('module "rds_{{ id }}" {\n  identifier = {{ name }}\n'
              '  size = {{ allocated_storage }}\n}\n'),
    "9.1.0": 'module "rds" {\n  engine = {{ engine | hcl }\n}\n',
    "9.2.0": 'module "rds" {\n  a = 1\n  engine = "{{ no_such_column }}"\n}\n',
    "9.3.0": 'module "rds" {\n  a = {{ engine | hcl }}\n  b = = 1\n}\n',
}


def lint_app(tmp_path: Path, extra: dict[str, str] | None = None) -> Flask:
    url = sqlite_apex(tmp_path / "apex.sqlite")
    if extra:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            for version, text in extra.items():
                conn.execute(sa.text(
                    "INSERT INTO tf_template (cloud_id, resource_type, module_version, "
                    "jinja_template) VALUES ('aws', 'rds', :v, :t)"), {"v": version, "t": text})
        engine.dispose()
    return create_app({"APP_ENV": "test", "TFGEN_VAR_DIR": str(tmp_path / "var"),
                       "DATABASE_URL": url, "AUTH_MODE": "dev"})


def test_the_demo_templates_are_clean(tmp_path: Path) -> None:
    app = lint_app(tmp_path)
    result = app.test_cli_runner().invoke(args=["templates", "lint"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "5 template(s) checked, 0 finding(s)" in result.stderr


def test_findings_are_one_line_each_with_ref_and_line(tmp_path: Path) -> None:
    app = lint_app(tmp_path, BAD_TEMPLATES)
    result = app.test_cli_runner().invoke(args=["templates", "lint"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "aws/rds@9.0.0:2: name is printed outside quotes without an hcl filter "
        "(use | hcl, | hcl_identifier or | hcl_map)",
        "aws/rds@9.0.0:3: allocated_storage is printed outside quotes without an hcl filter "
        "(use | hcl, | hcl_identifier or | hcl_map)",
        "aws/rds@9.1.0:2: template aws/rds@9.1.0 line 2: unexpected '}'",
        "aws/rds@9.2.0:3: INVALID_REQUEST_DATA with a sample row: template aws/rds@9.2.0 "
        "line 3 uses 'no_such_column', which the request does not have",
        "aws/rds@9.3.0:3: VALIDATION_FAILED with a sample row: aws/rds@9.3.0.tf line 3, "
        "column 7: Invalid expression: Expected the start of an expression, but found an "
        "invalid expression token.",
    ]
    assert "9 template(s) checked, 5 finding(s)" in result.stderr
