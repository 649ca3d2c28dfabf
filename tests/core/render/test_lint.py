"""``manage.py templates lint`` against a SQLite APEX schema with the demo data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from app import create_app
from app.core.render.lint import column_kinds
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


def run_lint(tmp_path: Path, extra: dict[str, str] | None = None) -> Any:
    """``manage.py templates lint`` on the demo data plus ``extra`` aws/rds templates."""
    return lint_app(tmp_path, extra).test_cli_runner().invoke(args=["templates", "lint"])


def test_the_demo_templates_are_clean(tmp_path: Path) -> None:
    result = run_lint(tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "5 template(s) checked, 0 finding(s), 0 warning(s)" in result.stderr


def test_findings_are_one_line_each_with_ref_and_line(tmp_path: Path) -> None:
    result = run_lint(tmp_path, BAD_TEMPLATES)
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


# Templates printing the demo's list-like and flag-like columns (aws/rds: ``multi_az`` is
# BOOLEAN, read back as 1/0; ``subnet_ids`` holds "[subnet-0a1b, subnet-0c2d]"; ec2's rules
# view has ``cidr_blocks``), the wrong way and the right way.
SHAPE_TEMPLATES = {
    "8.0.0": ('module "rds" {\n'
              "  multi_az   = {{ multi_az | hcl }}\n"
              "  subnet_ids = {{ subnet_ids | hcl }}\n"
              "  standby    = {{ multi_az | to_terraform_string }}\n"
              "  subnets    = {{ subnet_ids | to_terraform_string }}\n"
              "}\n"),
    "8.1.0": ('module "rds" {\n'
              "  multi_az   = {{ multi_az | to_terraform_bool }}\n"
              "  subnet_ids = {{ subnet_ids | to_terraform_list }}\n"
              '  note       = "{{ multi_az }} {{ subnet_ids }}"\n'
              "  first      = {{ subnet_ids.split(',')[0] | hcl }}\n"
              "}\n"),
}


def test_list_and_flag_columns_printed_bare_are_warned_about(tmp_path: Path) -> None:
    result = run_lint(tmp_path, SHAPE_TEMPLATES)
    assert result.exit_code == 0, result.output  # warnings only
    flag = "which writes 1/0 or Y/N where Terraform expects true/false; use | to_terraform_bool"
    listed = "which writes one string (or a comma list as one item); use | to_terraform_list"
    assert result.stdout.splitlines() == [
        f"aws/rds@8.0.0:2: warning: multi_az holds a flag but is printed with | hcl, {flag}",
        f"aws/rds@8.0.0:3: warning: subnet_ids holds a list but is printed with | hcl, {listed}",
        "aws/rds@8.0.0:4: warning: multi_az holds a flag but is printed with "
        f"| to_terraform_string, {flag}",
        "aws/rds@8.0.0:5: warning: subnet_ids holds a list but is printed with "
        f"| to_terraform_string, {listed}",
    ]
    assert "7 template(s) checked, 0 finding(s), 4 warning(s)" in result.stderr


def test_a_bare_flag_is_both_an_error_and_a_warning(tmp_path: Path) -> None:
    result = run_lint(tmp_path, {"8.2.0": 'module "rds" {\n  multi_az = {{ multi_az }}\n}\n'})
    assert (result.exit_code, result.stdout.splitlines()) == (1, [
        "aws/rds@8.2.0:2: multi_az is printed outside quotes without an hcl filter "
        "(use | hcl, | hcl_identifier or | hcl_map)",
        "aws/rds@8.2.0:2: warning: multi_az holds a flag but is printed without a filter, "
        "which writes 1/0 or Y/N where Terraform expects true/false; use | to_terraform_bool",
    ])


@pytest.mark.parametrize(("types", "rows", "kinds"), [
    # Oracle NUMBER(1) and CHAR(1) 'Y'/'N' flags; a BOOLEAN read back as 1/0 (SQLite)
    ({"multi_az": sa.Numeric(1, 0)}, [{"multi_az": 1}, {"multi_az": 0}], {"multi_az": "flag"}),
    ({"encrypted": sa.CHAR(1)}, [{"encrypted": "Y"}, {"encrypted": "n"}],
     {"encrypted": "flag"}),
    ({"public": sa.String(5)}, [{"public": "true"}, {"public": None}], {"public": "flag"}),
    ({"multi_az": sa.Boolean()}, [{"multi_az": 1}], {"multi_az": "flag"}),
    # a real boolean column that arrives as Python bools prints fine with | hcl
    ({"multi_az": sa.Boolean()}, [{"multi_az": True}, {"multi_az": False}], {}),
    # counts and codes are not flags, whatever their values
    ({"replicas": sa.Integer()}, [{"replicas": 1}, {"replicas": 0}], {}),
    ({"tier": sa.CHAR(1)}, [{"tier": "A"}, {"tier": "Y"}], {}),
    ({"size": sa.Numeric(10, 0)}, [{"size": 1}], {}),
    # lists: a bracketed value anywhere in the sample, or a list-like name on text
    ({"subnet_ids": sa.String(400)}, [{"subnet_ids": "[a, b]"}], {"subnet_ids": "list"}),
    ({"sgs": sa.String(400)}, [{"sgs": "x"}, {"sgs": "[x, y]"}], {"sgs": "list"}),
    ({"cidr_blocks": sa.String(400)}, [{"cidr_blocks": "10.0.0.0/8"}], {"cidr_blocks": "list"}),
    ({"name": sa.String(100)}, [{"name": "orders-db"}], {}),
    ({"subnet_ids": sa.String(400)}, [{"subnet_ids": None}], {}),
], ids=repr)
def test_column_kinds(types: dict[str, object], rows: list[dict[str, object]],
                      kinds: dict[str, str]) -> None:
    assert column_kinds(types, rows) == kinds
