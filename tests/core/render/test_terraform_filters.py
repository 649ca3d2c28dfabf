"""``to_terraform_string``, ``to_terraform_list`` and ``to_terraform_bool``, as design.md's
"Output conventions" spell them, read back through HashiCorp's HCL parser (``pygohcl``).

Values come shaped as the APEX schema holds them: a VARCHAR2 list written ``[a, b]``,
a NUMBER(1) or CHAR(1) flag, NULLs.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pygohcl
import pytest

from app.core.model import ResourceRequest, Template
from app.core.render import Renderer
from app.errors import InvalidRequestData


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def render(renderer: Renderer, text: str, sg_rules: tuple[dict[str, Any], ...] = (),
           **row: Any) -> str:
    return renderer.render(Template("aws", "rds", "1.0.0", text),
                           ResourceRequest("aws", "rds", 1, {"id": 1, "name": "n", **row},
                                           sg_rules))


def parsed(renderer: Renderer, expression: str, value: Any) -> Any:
    """``v = {{ <expression> }}`` rendered with ``value`` and parsed by HashiCorp's parser."""
    text = render(renderer, f"v = {{{{ {expression} }}}}\n", value=value)
    return pygohcl.loads(text)["v"]


# --- to_terraform_string ------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (None, None),
    ("orders-db", "orders-db"),
    ("", ""),
    (42, "42"),
    (Decimal("12.50"), "12.50"),
    ("[a, b]", "[a, b]"),  # a string filter never splits
    ('"} evil ${var.x} %{if 1}\n\\', '"} evil ${var.x} %{if 1}\n\\'),
])
def test_to_terraform_string(renderer: Renderer, value: Any, expected: Any) -> None:
    assert parsed(renderer, "value | to_terraform_string", value) == expected


# --- to_terraform_list --------------------------------------------------------------------

HOSTILE_ITEMS = [
    'say "hi"',
    "${var.secret}",
    "%{ if true }x%{ endif }",
    "back\\slash\\",
    "tab\there",
    "} evil { = 1",
    "null",
    "true",
]


@pytest.mark.parametrize(("value", "expected"), [
    # falsy -> []
    (None, []), ("", []), ([], []), ((), []),
    # a string written [a, b]: split on commas, items stripped, empty ones dropped
    ("[subnet-0a1, subnet-0b2]", ["subnet-0a1", "subnet-0b2"]),
    ("[subnet-0a1,subnet-0b2]", ["subnet-0a1", "subnet-0b2"]),
    ("  [ a ,  b  ]  ", ["a", "b"]),
    ("[a]", ["a"]), ("[]", []), ("[ ]", []), ("[ , ,]", []), ("[a,,b, ]", ["a", "b"]),
    ("[10.0.0.0/8, 192.168.0.0/16]", ["10.0.0.0/8", "192.168.0.0/16"]),
    # any other string or scalar: one item, as it is
    ("subnet-0a1", ["subnet-0a1"]),
    ("a,b", ["a,b"]),
    ("[a, b", ["[a, b"]),
    ("a, b]", ["a, b]"]),
    (" x ", [" x "]),
    ("   ", []),
    (7, ["7"]), (Decimal("2.5"), ["2.5"]), (True, ["True"]),
    # a list: its items, empty ones dropped, each a string
    (["a", "b"], ["a", "b"]),
    (["a", None, "", "  ", "b"], ["a", "b"]),
    ([1, 2], ["1", "2"]),
    (("x", "y"), ["x", "y"]),
], ids=repr)
def test_to_terraform_list(renderer: Renderer, value: Any, expected: list[str]) -> None:
    assert parsed(renderer, "value | to_terraform_list", value) == expected


def test_hostile_items_inside_a_bracketed_string_stay_strings(renderer: Renderer) -> None:
    value = "[" + ", ".join(HOSTILE_ITEMS) + "]"
    assert parsed(renderer, "value | to_terraform_list", value) == HOSTILE_ITEMS


@pytest.mark.parametrize(("value", "expected"), [
    # Commas always split, even inside quotes: the pieces stay plain strings.
    ('["a,b", "c"]', ['"a', 'b"', '"c"']),
    ("[x = 1, y]", ["x = 1", "y"]),
    # A newline inside an item is kept (escaped); those at an item's edges are stripped.
    ("[line1\nline2, \nz\n]", ["line1\nline2", "z"]),
    ("[\r\n a \r\n, b]", ["a", "b"]),
    # Brackets inside do not nest.
    ("[[a, b], c]", ["[a", "b]", "c"]),
    ('[a"], ["b]', ['a"]', '["b']),
    ("[$${x}, %%{y}, ${, %{, $, %]", ["$${x}", "%%{y}", "${", "%{", "$", "%"]),
    ("[\\\", \\\\, \"]", ['\\"', "\\\\", '"']),
    ("[\u2028, nul\x00, bell\x07]", ["nul\x00", "bell\x07"]),
], ids=["quoted-commas", "assignment", "newlines", "crlf", "nested", "quotes-brackets",
        "templates", "backslashes", "non-printables"])
def test_hostile_bracketed_strings_parse_to_their_pieces(
        renderer: Renderer, value: str, expected: list[str]) -> None:
    assert parsed(renderer, "value | to_terraform_list", value) == expected


def test_a_bracketed_list_inside_a_block_and_a_loop(renderer: Renderer) -> None:
    text = render(renderer, 'resource "aws_db_subnet_group" "g" {\n'
                            "  subnet_ids = {{ subnet_ids | to_terraform_list }}\n"
                            "{% for r in sg_rules %}"
                            "  ingress {\n    cidr_blocks = {{ r.cidr | to_terraform_list }}\n  }\n"
                            "{% endfor %}}\n",
                  subnet_ids="[subnet-0a1, subnet-0b2]",
                  sg_rules=({"cidr": "[10.0.0.0/8, ${x}]"}, {"cidr": "0.0.0.0/0"}, {"cidr": None}))
    group = pygohcl.loads(text)["resource"]["aws_db_subnet_group"]["g"]
    assert group["subnet_ids"] == ["subnet-0a1", "subnet-0b2"]
    assert [b["cidr_blocks"] for b in group["ingress"]] == [["10.0.0.0/8", "${x}"],
                                                            ["0.0.0.0/0"], []]


def test_to_terraform_list_refuses_a_mapping_naming_the_line(renderer: Renderer) -> None:
    with pytest.raises(InvalidRequestData) as info:
        render(renderer, "a = 1\nv = {{ value | to_terraform_list }}\n", value={"a": 1})
    assert info.value.details["line"] == 2


# --- to_terraform_bool --------------------------------------------------------------------

TRUE = [True, 1, Decimal(1), 1.0, "1", "Y", "y", "yes", "YES", "Yes", "true", "TRUE", "True",
        " Y ", "Y  "]  # CHAR(3) pads with blanks
FALSE = [False, 0, Decimal(0), 0.0, "0", "N", "n", "no", "NO", "false", "FALSE", "False", " N"]
NOT_FLAGS = ["maybe", "", " ", 2, -1, Decimal("0.5"), "2", "t", "f", "on", "off", "YN",
             "Y N", "[true]", ["Y"], {"a": 1}]


@pytest.mark.parametrize("value", TRUE, ids=repr)
def test_to_terraform_bool_true(renderer: Renderer, value: Any) -> None:
    assert parsed(renderer, "value | to_terraform_bool", value) is True


@pytest.mark.parametrize("value", FALSE, ids=repr)
def test_to_terraform_bool_false(renderer: Renderer, value: Any) -> None:
    assert parsed(renderer, "value | to_terraform_bool", value) is False


def test_to_terraform_bool_null(renderer: Renderer) -> None:
    text = render(renderer, "v = {{ value | to_terraform_bool }}\n", value=None)
    assert text == "v = null\n"
    assert pygohcl.loads(text) == {"v": None}


@pytest.mark.parametrize("value", NOT_FLAGS, ids=repr)
def test_to_terraform_bool_refuses_anything_else_naming_the_variable(
        renderer: Renderer, value: Any) -> None:
    with pytest.raises(InvalidRequestData) as info:
        render(renderer, "a = 1\nmulti_az = {{ multi_az | to_terraform_bool }}\n", multi_az=value)
    error = info.value
    assert error.code == "INVALID_REQUEST_DATA"
    assert error.details == {"template": "aws/rds@1.0.0", "line": 2, "variable": "multi_az"}
    assert "multi_az" in error.message and "line 2" in error.message


def test_to_terraform_bool_names_a_rule_field_and_a_set_variable(renderer: Renderer) -> None:
    with pytest.raises(InvalidRequestData) as info:
        render(renderer, "{% for rule in sg_rules %}\nx = {{ rule.enabled | to_terraform_bool }}\n"
                         "{% endfor %}", sg_rules=({"enabled": "Y"}, {"enabled": "perhaps"}))
    assert info.value.details["variable"] == "rule.enabled"
    assert "rule.enabled is 'perhaps'" in info.value.message
    with pytest.raises(InvalidRequestData) as info:
        render(renderer, "{% set on = encrypted | to_terraform_bool %}\nx = {{ on }}\n",
               encrypted="X")
    assert info.value.details["variable"] == "encrypted"


def test_to_terraform_bool_inside_quotes_is_its_text(renderer: Renderer) -> None:
    text = render(renderer, 'v = "{{ value | to_terraform_bool }}"\n', value="N")
    assert pygohcl.loads(text) == {"v": "false"}
