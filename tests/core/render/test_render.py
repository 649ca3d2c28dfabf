"""The renderer: HCL escaping wherever a value lands, filters, sandbox, errors, cache.

Every rendered text is parsed with HashiCorp's HCL parser (``pygohcl``): a value is
safe when the parse gives back exactly the input string, and the parsed document has
exactly the attributes and blocks the template wrote. ``pygohcl`` turns a live
``${expr}`` into ``expr`` and an escaped ``$${`` into ``${``, so an interpolation a
value smuggled in would show as a difference.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pygohcl
import pytest

from app.core.model import ResourceRequest, Template
from app.core.render import Renderer
from app.core.render.hcl_writer import escape_string, hcl, is_identifier
from app.errors import InvalidRequestData, RenderError

CORPUS: list[str] = [
    "plain",
    "",
    'say "hi"',
    '"',
    '\\',
    'a\\',
    '\\"',
    '\\n is not a newline',
    "line one\nline two",
    "crlf\r\nend",
    "tab\there",
    "${var.secret}",
    "$${already escaped}",
    "$$${triple}",
    "%{ if true }yes%{ endif }",
    "%%{x}",
    "$",
    "%",
    "a$",
    "{",
    "}",
    "{b}",
    "${",
    "}\n}\nresource \"evil\" \"x\" {\n",
    '" }\nresource "evil" "x" {\n  a = "',
    "\"\nextra = 1\n#",
    "<<EOT\ninjected\nEOT",
    "EOT",
    "x\nEOT\ny",
    "*/ evil = 1 /*",
    "# not a comment",
    "// nor this",
    "/* nor this */",
    "héllo wörld, 日本語, emoji 🚀",
    "right-to-left \u202e override",
    "zero\u200bwidth and nbsp\u00a0here",
    "line\u2028separator",
    "nul\x00byte and bell\x07 and del\x7f",
    "1, Evil = 2",
    "x\" = 1\n  y = \"",
    "a" * 100_000,
    ("${x}" * 5000) + "\\" * 1000,
]

IDS = [f"v{i}" for i in range(len(CORPUS))]


def tpl(text: str, version: str = "1.0.0") -> Template:
    return Template("aws", "test", version, text)


def request(**row: Any) -> ResourceRequest:
    return ResourceRequest("aws", "test", 1, {"id": 1, "name": "n", **row})


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def render(renderer: Renderer, text: str, **row: Any) -> str:
    return renderer.render(tpl(text), request(**row))


@pytest.mark.parametrize("value", CORPUS, ids=IDS)
def test_values_inside_quoted_strings_come_back_exactly(renderer: Renderer, value: str) -> None:
    text = render(renderer, 'resource "x" "y" {\n  a = "{{ v }}"\n'
                            '  b = "pre-{{ v }}-post ${upper(\"k\")} {{ v }}"\n'
                            '  c = "{{ v }}{{ v }}"\n}\n', v=value)
    assert pygohcl.loads(text) == {"resource": {"x": {"y": {
        "a": value, "b": f"pre-{value}-post upper(\"k\") {value}", "c": value + value}}}}


@pytest.mark.parametrize("value", CORPUS, ids=IDS)
def test_values_through_the_filters_come_back_exactly(renderer: Renderer, value: str) -> None:
    text = render(renderer, "a = {{ v | hcl }}\nb = {{ v | to_terraform_string }}\n"
                            "c = {{ [v, 1, none, true] | hcl }}\n"
                            "d = {{ [v, v] | to_terraform_list }}\n"
                            "e = {{ {v: v} | hcl_map }}\n"
                            'f = {{ {"k": [v, {"n": v, "m": [[v]]}]} | hcl }}\n', v=value)
    assert pygohcl.loads(text) == {
        "a": value, "b": value, "c": [value, 1, None, True],
        "d": [value, value] if value.strip() else [],  # blank items are dropped
        "e": {value: value}, "f": {"k": [value, {"n": value, "m": [[value]]}]}}


@pytest.mark.parametrize("value", CORPUS, ids=IDS)
def test_values_in_comments_stay_comments(renderer: Renderer, value: str) -> None:
    text = render(renderer, "# {{ v }}\n// {{ v }}\n/* {{ v }} */\na = 1\n", v=value)
    assert pygohcl.loads(text) == {"a": 1}


@pytest.mark.parametrize("value", CORPUS, ids=IDS)
def test_values_in_heredocs_come_back_or_are_refused(renderer: Renderer, value: str) -> None:
    template = "a = <<EOT\n{{ v }}\nEOT\nb = <<-EOT\n  x{{ v }}x\n  EOT\n"
    if any(line.strip() == "EOT" for line in value.splitlines()):
        with pytest.raises(InvalidRequestData, match="close the heredoc"):
            render(renderer, template, v=value)
        return
    if not value.replace("\n", "").replace("\t", "").isprintable():
        with pytest.raises(InvalidRequestData, match="cannot be written in a heredoc"):
            render(renderer, template, v=value)
        return
    parsed = pygohcl.loads(render(renderer, template, v=value))
    assert parsed["a"] == value + "\n"
    assert set(parsed) == {"a", "b"}


@pytest.mark.parametrize("value", CORPUS, ids=IDS)
def test_bare_values_are_plain_tokens_or_refused(renderer: Renderer, value: str) -> None:
    template = 'resource "x" "y" {\n  tags = { Name = {{ v }} }\n}\n'
    try:
        text = render(renderer, template, v=value)
    except InvalidRequestData as e:
        assert e.details["variable"] == "v"
        assert e.details["line"] == 2
        return
    parsed = pygohcl.loads(text, keep_interpolations=True)
    assert list(parsed["resource"]["x"]["y"]["tags"]) == ["Name"]


def test_adjacent_values_cannot_join_into_an_interpolation(renderer: Renderer) -> None:
    text = render(renderer, 'a = "{{ d }}{{ b }}"\nb = "{% if true %}{{ b }}{% endif %}"\n'
                            'c = "{{ d }}{% if true %}{x}{% endif %}"\n', d="$", b="{var.x}")
    assert pygohcl.loads(text) == {"a": "${var.x}", "b": "{var.x}", "c": "${x}"}


def test_demo_values_render_and_parse(renderer: Renderer) -> None:
    from app.demo import RDS_TEMPLATE

    row = {"module_version": "1.2.0", "engine": "postgres", "engine_version": "16",
           "instance_class": "db.t3", "allocated_storage": 100, "multi_az": True,
           "subnet_ids": "[a, b]", "cost_center": None, "requested_by": "x",
           "description": 'Orders "primary" store; ${do not interpolate}',
           "name": "orders\n} evil {", "id": 42}
    text = renderer.render(Template("aws", "rds", "1.2.0", RDS_TEMPLATE),
                           ResourceRequest("aws", "rds", 42, row))
    module = pygohcl.loads(text)["module"]["rds_42"]
    assert module["identifier"] == "orders\n} evil {"
    assert module["tags"] == {"Name": "orders\n} evil {", "CostCenter": "",
                              "RequestedBy": "x",
                              "Description": 'Orders "primary" store; ${do not interpolate}'}
    assert module["allocated_storage"] == 100 and module["multi_az"] is True
    assert module["subnet_ids"] == ["a", "b"]


@pytest.mark.parametrize(("value", "literal"), [
    ("a", '"a"'), (7, "7"), (-2.5, "-2.5"), (Decimal("100.50"), "100.50"),
    (Decimal("1E+2"), "100"), (True, "true"), (False, "false"), (None, "null"),
    ([], "[]"), ({}, "{}"), ([1, "b"], '[1, "b"]'),
    ({"Name": "x", "for": 1, "a b": 2}, '{\nName = "x"\n"for" = 1\n"a b" = 2\n}'),
])
def test_hcl_filter_literals(value: Any, literal: str) -> None:
    assert hcl(value) == literal


@pytest.mark.parametrize("value", [float("nan"), float("inf"), Decimal("NaN"), object(),
                                   {1, 2}, b"bytes"])
def test_hcl_filter_refuses_what_has_no_literal(renderer: Renderer, value: Any) -> None:
    with pytest.raises(InvalidRequestData, match="line 1"):
        render(renderer, "a = {{ v | hcl }}\n", v=value)


def test_hcl_identifier_accepts_identifiers_and_refuses_the_rest(renderer: Renderer) -> None:
    assert render(renderer, 'a = {{ v | hcl_identifier }}\n', v="web_01-b") == "a = web_01-b\n"
    for bad in ("1abc", "a b", "a.b", "", 'a"', "a\nb", "-a"):
        assert not is_identifier(bad)
        with pytest.raises(InvalidRequestData, match="not an HCL identifier"):
            render(renderer, 'a = {{ v | hcl_identifier }}\n', v=bad)


def test_hcl_map_from_rows(renderer: Renderer) -> None:
    rules = [{"name": "https", "cidr": "0.0.0.0/0"}, {"name": "ssh\"", "cidr": "10.0.0.0/8"}]
    text = render(renderer, 'a = {{ rules | hcl_map("name", "cidr") }}\n', rules=rules)
    assert pygohcl.loads(text) == {"a": {"https": "0.0.0.0/0", 'ssh"': "10.0.0.0/8"}}


def test_old_filters_keep_their_meaning(renderer: Renderer) -> None:
    text = render(renderer, "a = {{ n | to_terraform_string }}\nb = {{ s.split(',') | "
                            "to_terraform_list }}\nc = {{ 5 | to_terraform_string }}\n",
                  n='x"y', s="p,q")
    assert pygohcl.loads(text) == {"a": 'x"y', "b": ["p", "q"], "c": "5"}


def test_numbers_booleans_and_none_print_as_hcl(renderer: Renderer) -> None:
    text = render(renderer, 'a = {{ i }}\nb = {{ f }}\nc = {{ t }}\nd = {{ n }}\n'
                            'e = "{{ t }}-{{ n }}-{{ i }}"\n',
                  i=3, f=Decimal("2.5"), t=False, n=None)
    assert pygohcl.loads(text) == {"a": 3, "b": 2.5, "c": False, "d": None, "e": "false--3"}


def test_macros_and_set_blocks_are_escaped_where_they_land(renderer: Renderer) -> None:
    template = ('{% macro tag(k, v) %}{{ k | hcl_identifier }} = "{{ v }}"\n{% endmacro %}'
                '{% set label %}{{ a }}-{{ b }}{% endset %}'
                'tags = {\n{{ tag("Name", a) }}{{ tag("Other", b) }}}\nlabel = "{{ label }}"\n')
    text = render(renderer, template, a='x"\n}', b="${y}")
    assert pygohcl.loads(text) == {"tags": {"Name": 'x"\n}', "Other": "${y}"},
                                   "label": 'x"\n}-${y}'}


def test_a_missing_variable_names_it_and_the_line(renderer: Renderer) -> None:
    with pytest.raises(InvalidRequestData) as info:
        render(renderer, 'a = 1\nb = "{{ engine }}"\n')
    assert info.value.code == "INVALID_REQUEST_DATA"
    assert info.value.details == {"template": "aws/test@1.0.0", "line": 2, "variable": "engine"}
    assert "'engine'" in info.value.message and "line 2" in info.value.message
    with pytest.raises(InvalidRequestData) as info:
        render(renderer, 'a = 1\n\nb = {{ rules[0].port | hcl }}\n', rules=[{"cidr": "x"}])
    assert info.value.details["variable"] == "port" and info.value.details["line"] == 3


def test_template_errors_name_the_template_and_line(renderer: Renderer) -> None:
    with pytest.raises(RenderError) as info:
        render(renderer, 'a = 1\nb = {{ name | hcl }\n')
    assert info.value.code == "RENDER_ERROR"
    assert info.value.details == {"template": "aws/test@1.0.0", "line": 2}
    assert "aws/test@1.0.0 line 2" in info.value.message
    with pytest.raises(RenderError) as info:
        render(renderer, 'a = 1\nb = 2\nc = {{ (1 / 0) | hcl }}\n')
    assert info.value.details["line"] == 3
    with pytest.raises(RenderError, match=r"(?i)no filter named 'nope'"):
        render(renderer, "a = {{ name | nope }}\n")


@pytest.mark.parametrize("template", [
    "a = {{ name.__class__ }}\n",
    "a = {{ name.__class__.__mro__[1].__subclasses__() | hcl }}\n",
    'a = "{{ "{0.__class__}".format(name) }}"\n',
    'a = "{{ "{0.__class__.__init__.__globals__}".format_map({"0": name}) }}"\n',
    'a = "{{ name | attr("__class__") }}"\n',
    'a = "{{ ("{0.__class__}" | attr("format"))(name) }}"\n',
    'a = "{{ cycler.__init__.__globals__ }}"\n',
    'a = "{{ lipsum.__globals__["os"] }}"\n',
    'a = "{{ sg_rules.append(1) }}"\n',
    'a = "{{ self.__dict__ }}"\n',
    'a = "{{ "a" * 100000000 }}"\n',
    'a = "{{ 2 ** 100000 }}"\n',
])
def test_sandbox_escapes_fail_as_render_errors(renderer: Renderer, template: str) -> None:
    with pytest.raises(RenderError) as info:
        render(renderer, template)
    assert info.value.details["line"] == 1
    assert "<class" not in info.value.message and " at 0x" not in info.value.message


def test_html_filters_are_not_offered(renderer: Renderer) -> None:
    with pytest.raises(RenderError, match=r"(?i)no filter named 'safe'"):
        render(renderer, "a = {{ name | safe }}\n")


def test_compiled_templates_are_cached_by_identity_and_text() -> None:
    renderer = Renderer(cache_size=2)
    first = renderer.compile(tpl("a = 1\n"))
    assert renderer.compile(tpl("a = 1\n")) is first
    assert renderer.compile(tpl("a = 2\n")) is not first
    assert renderer.compile(tpl("a = 1\n", version="2.0.0")) is not first
    assert renderer.compile(tpl("a = 1\n")) is not first  # evicted (size 2)
    uncached = Renderer(cache_size=0)
    assert uncached.compile(tpl("a = 1\n")) is not uncached.compile(tpl("a = 1\n"))


def test_escape_string_guards_edges_only_when_asked() -> None:
    assert escape_string("{a}$") == "{a}$"
    assert escape_string("{a}$", guard_start=True, guard_end=True) == "\\u007ba}\\u0024"
    assert escape_string("${x}") == "$${x}"
    with pytest.raises(ValueError, match="surrogate"):
        escape_string("\ud800")
