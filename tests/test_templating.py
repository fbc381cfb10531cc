from datetime import UTC, datetime

import pytest

from automations import templating
from automations.templating import TemplateError, build_context, render, render_value, validate_template

TRIGGER = {
    "body": {"name": "{{ 7*7 }}", "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}], "amount": 1999,
             "note": None, "created": 1705312800},
    "headers": {"content-type": "application/json"},
    "query": {"ref": "ad"},
    "method": "POST",
}
FIELDS = {"email": "ada@example.com", "amount": 1999, "items": [1, 2, 3], "nothing": None, "trigger": "shadow"}


@pytest.fixture
def ctx():
    return build_context(TRIGGER, FIELDS, {"crm": {"id": 7, "tags": ["x"]}})


def test_plain_text_is_returned_untouched(ctx):
    source = "just text, even with { braces } and %"
    assert render(source, ctx) is source
    assert render(42, ctx) == 42


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ fields.items }}", [1, 2, 3]),
        ("{{ items }}", [1, 2, 3]),
        ("{{ amount / 100 }}", 19.99),
        ("{{ amount }}", 1999),
        ("  {{ email }}  \n", "ada@example.com"),
        ("{{- email -}}", "ada@example.com"),
        ("{{ nothing }}", None),
        ("{{ trigger.body.missing.deeper }}", None),
        ("{{ steps.crm.id }}", 7),
        ("{{ steps.crm }}", {"id": 7, "tags": ["x"]}),
        ("{{ amount > 10 }}", True),
        ("{{ trigger.body['items'] | map(attribute='sku') }}", ["a", "b"]),
        ("{{ range(3) }}", [0, 1, 2]),
        ("{{ trigger.headers['content-type'] }}", "application/json"),
    ],
)
def test_single_expression_keeps_type(ctx, source, expected):
    result = render(source, ctx)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ trigger.body.created | parse_datetime }}", "2024-01-15T10:00:00+00:00"),
        ("{{ '2024-01-15' | parse_datetime | add_time(days=1) }}", "2024-01-16T00:00:00+00:00"),
        ("{{ {'at': trigger.body.created | parse_datetime, 'n': [1, '2024-01-15 09:30' | parse_datetime]} }}",
         {"at": "2024-01-15T10:00:00+00:00", "n": [1, "2024-01-15T09:30:00+00:00"]}),
        ("{{ [trigger.body.created | parse_datetime] | map('string') }}", ["2024-01-15 10:00:00+00:00"]),
    ],
)
def test_a_single_expression_giving_dates_gives_their_iso_text(ctx, source, expected):
    """What every connector sends and the history stores: a datetime object inside a step's
    inputs could not be recorded (the JSON column refused it) after the step had been sent."""
    assert render(source, ctx) == expected


def test_decimals_and_dates_take_their_json_form_and_plain_data_is_left_as_it_is():
    from decimal import Decimal

    from automations.jsonable import plain

    assert plain({"a": [Decimal("2.50"), Decimal(3)], "b": datetime(2024, 1, 15, tzinfo=UTC).date()}) == {
        "a": [2.5, 3], "b": "2024-01-15"}
    assert plain(Decimal("NaN")) == "NaN"
    data = {"a": [1, "x", None, {"b": True}]}
    assert plain(data) is data


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Hi {{ email }}!", "Hi ada@example.com!"),
        ("{{ amount }}{{ amount }}", "19991999"),
        ("x {{ amount }}", "x 1999"),
        ("[{{ nothing }}]", "[]"),
        ("[{{ trigger.body.missing.deeper }}]", "[]"),
        ("{% for i in trigger.body['items'] %}{{ i.sku }}x{{ i.qty }};{% endfor %}", "ax2;bx1;"),
        ("{{ trigger.body.missing | default('n/a') }}", "n/a"),
        ("line\n", "line\n"),
        ("{# comment #}ok", "ok"),
        ("{{ '{{' }} literal", "{{ literal"),
    ],
)
def test_mixed_templates_render_to_strings(ctx, source, expected):
    assert render(source, ctx) == expected


def test_payload_text_is_never_rendered(ctx):
    assert render("{{ trigger.body.name }}", ctx) == "{{ 7*7 }}"
    assert render("Name: {{ trigger.body.name }}", ctx) == "Name: {{ 7*7 }}"
    assert render_value({"n": "{{ trigger.body.name }}", "l": ["{{ trigger.body.name }}"]}, ctx) == {
        "n": "{{ 7*7 }}", "l": ["{{ 7*7 }}"]}
    evil = build_context({"body": {}}, {"x": "{% for i in range(10**9) %}{% endfor %}"}, {})
    assert render("{{ x }}", evil) == "{% for i in range(10**9) %}{% endfor %}"


def test_payload_keys_win_over_dict_methods(ctx):
    assert render("{{ trigger.body.items | length }}", ctx) == 2
    assert render("{{ trigger.query.keys() | list }}", ctx) == ["ref"]


def test_filters_are_available(ctx):
    assert render("{{ trigger.body.amount | format_money('USD', minor_units=True) }}", ctx) == "$19.99"
    assert render("{{ trigger.body.created | format_datetime('%d/%m/%Y', 'Europe/Paris') }}", ctx) == "15/01/2024"
    assert render("{{ email | upper | sha256 | length }}", ctx) == 64
    assert render("{{ trigger.body.note | default_if_empty('none') }}", ctx) == "none"


def test_build_context_fields_do_not_shadow_reserved_names():
    context = build_context({"body": 1}, {"trigger": "x", "now": "y", "email": "e"}, {})
    assert context["trigger"] == {"body": 1}
    assert context["fields"]["trigger"] == "x"
    assert context["email"] == "e"
    assert render("{{ fields.now }}", context) == "y"
    assert datetime.fromisoformat(render("{{ now() }}", context)).tzinfo is not None  # ISO text: see below


def test_now_is_aware_utc_and_injectable():
    assert render("{{ now().tzinfo }}", build_context({}, {}, {})) is UTC
    assert render("{{ now() }}", build_context({}, {}, {})).endswith("+00:00")
    frozen = datetime(2024, 1, 15, tzinfo=UTC)
    context = build_context({}, {}, {}, now=lambda: frozen)
    assert render("{{ now() | format_datetime('%Y-%m-%d') }}", context) == "2024-01-15"


def test_render_value_walks_structures(ctx):
    value = {"to": "{{ email }}", "{{ 'dyn' ~ 'key' }}": 1, "n": 5, "nested": [{"a": "{{ amount }}"}, None, True]}
    assert render_value(value, ctx) == {"to": "ada@example.com", "dynkey": 1, "n": 5,
                                        "nested": [{"a": 1999}, None, True]}


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "x {{ email.__class__.__base__.__subclasses__() }}",
        "{{ now.__globals__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ (1).__class__ }}",
        "{{ ''['__class__'] }}",
        "{{ email|attr('__class__') }}",
        "{{ '{0.__class__}'.format(email) }}",
        "{{ trigger.body.items.append(1) }}",
        "{{ 'abc'.translate({97: 'x' * 1000}) }}",
        "{% include 'other' %}",
    ],
)
def test_sandbox_escapes_fail_loudly(ctx, source):
    with pytest.raises(TemplateError):
        render(source, ctx)


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 10**9 }}",
        "{{ [1] * 10**9 }}",
        "{{ 10**9 * 'x' }}",
        "{{ 3 ** (10**8) }}",
        "{{ 10 ** (10 ** 10) }}",
        "{{ 9**9**9**9 * 10**5000 }}",
        "{{ range(10**9) }}",
        "{% for i in range(10**9) %}{% endfor %}",
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "{% set ns = namespace(a=[1]) %}{% for i in range(64) %}{% set ns.a = [ns.a, ns.a] %}{% endfor %}",
        "{% set ns = namespace(a={}) %}{% for i in range(64) %}{% set ns.a = {'l': ns.a, 'r': ns.a} %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = '%s%s' % (ns.s, ns.s) %}{% endfor %}",
        ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = '{}{}'.format(ns.s, ns.s) %}"
         "{% endfor %}"),
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = [ns.s, ns.s]|join %}{% endfor %}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ '{:>{w}}'.format(1, w=10**9) }}",
        "{{ '%999999999d' % 1 }}",
        "{{ '%*d' % (10**9, 1) }}",
        "{{ '%s'|format(1) ~ '%.999999999f'|format(1.0) }}",
        "{{ 'x'|center(10**9) }}",
        "{{ 'a\nb'|indent(10**9) }}",
        "{{ 'x'.ljust(10**9) }}",
        "{{ 'x'.zfill(10**9) }}",
        "{{ '\t'.expandtabs(10**9) }}",
        "{{ (1).to_bytes(10**9, 'big') }}",
        "{{ ('a' * 1000)|replace('a', 'b' * 100000) }}",
        "{{ ('a' * 1000).replace('a', 'b' * 100000) }}",
        "{{ ('b' * 100000).join(['a'] * 1000) }}",
        "{{ ['x' * 1000] * 10000 }}",
        "{{ [[1] * 100000] * 100000 }}",
        "{{ [1]|batch(10**9, 0)|list }}",
        "{{ [1]|slice(10**9)|list }}",
        "{% for i in range(5000) %}{{ 'x' * 1000 }}{% endfor %}",
    ],
)
def test_resource_limits_fail_fast(ctx, source):
    with pytest.raises(TemplateError):
        render(source, ctx)


def test_output_limit_message_and_arguments(ctx):
    with pytest.raises(TemplateError, match="output too large"):
        render("{% for i in range(5000) %}{{ 'x' * 1000 }}{% endfor %}", ctx)
    with pytest.raises(TemplateError, match="too large"):
        render("{{ email }} and more", ctx, max_output=10)
    assert render("{% for i in range(50) %}x{% endfor %}", ctx, max_output=50) == "x" * 50


def test_work_limit_argument_and_module_default(ctx, monkeypatch):
    source = "{% for i in range(100) %}.{% endfor %}"
    with pytest.raises(TemplateError, match="too much work"):
        render(source, ctx, max_work=50)
    monkeypatch.setattr(templating, "MAX_WORK", 50)
    with pytest.raises(TemplateError, match="too much work"):
        render(source, ctx)
    monkeypatch.undo()
    assert render(source, ctx) == "." * 100  # the budget belongs to one render, not the process


def test_render_time_limit_stops_slow_work_within_the_work_budget(ctx, monkeypatch):
    from automations import sandbox
    # Each iteration sorts a long list: cheap in work units, slow on the clock.
    source = "{% for i in range(200) %}{{ items | sort | length }}{% endfor %}"
    slow = dict(ctx, items=list(range(200_000, 0, -1)))
    monkeypatch.setattr(sandbox, "MAX_RENDER_SECONDS", 0.05)
    with pytest.raises(TemplateError, match="took longer than 0.05 s"):
        render(source, slow, max_work=10**9)
    monkeypatch.undo()
    assert render("{% for i in range(3) %}{{ items | length }}{% endfor %}", slow) == "200000" * 3


def test_budgets_are_per_thread(ctx):
    from concurrent.futures import ThreadPoolExecutor

    def work(i):
        try:
            return render("{% for i in range(100) %}.{% endfor %}", ctx, max_work=50 if i % 2 else None)
        except TemplateError:
            return "limited"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(8)))
    assert results == ["." * 100, "limited"] * 4


def test_normal_arithmetic_and_formatting_still_work(ctx):
    assert render("{{ 2 ** 10 }}", ctx) == 1024
    assert render("{{ '-' * 3 }}", ctx) == "---"
    assert render("{{ [0] * 3 }}", ctx) == [0, 0, 0]
    assert render("{{ '%s has %05.1f' % (email, 3.14159) }}", ctx) == "ada@example.com has 003.1"
    assert render("{{ '{}:{:>5}'.format('a', 'b') }}", ctx) == "a:    b"
    assert render("{{ 'abc'[::-1] ~ ('b' in 'abc')|string }}", ctx) == "cbaTrue"
    assert render("{{ items|join(', ') }}", ctx) == "1, 2, 3"
    assert render("{{ 'x'|center(5) }}", ctx) == "  x  "


@pytest.mark.parametrize(
    ("source", "fragment", "lineno"),
    [
        ("{{ 1/0 }}", "division by zero", 1),
        ("a\nb\n{{ 1/0 }}", "division by zero", 3),
        ("\n\n  {{ 1/0 }}", "division by zero", 3),
        ("{{ nosuch() }}", "'nosuch' is undefined", 1),
        ("{{ email + 1 }}", "TypeError", 1),
        ("{{ trigger.body.created | format_datetime(tz='Mars/Base') }}", "unknown time zone 'Mars/Base'", 1),
        ("ok\n{{ 'x' | format_money('XYZ') }}", "unknown currency 'XYZ'", 2),
        ("{{ x ", "unexpected end of template", 1),
    ],
)
def test_runtime_errors_name_the_line(ctx, source, fragment, lineno):
    with pytest.raises(TemplateError) as info:
        render(source, ctx)
    assert fragment in info.value.message
    assert info.value.lineno == lineno
    assert str(info.value).startswith(f"line {lineno}: ")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ x ", "line 1: unexpected end of template"),
        ("{% if %}", "line 1: Expected an expression"),
        ("{{ x }", "line 1: unexpected '}'"),
        ("one\ntwo {{ 1 +* 2 }}", "line 2: unexpected '*'"),
        ("{{ x | nosuchfilter }}", "line 1: unknown filter 'nosuchfilter'"),
        ("{% if a %}\n{{ y | nosuchfilter }}{% endif %}", "line 2: unknown filter 'nosuchfilter'"),
        ("{{ x is nosuchtest }}", "line 1: unknown test 'nosuchtest'"),
        ("{% endif %}", "line 1: Encountered unknown tag 'endif'"),
        ("{% for loop in x %}{% endfor %}", "line 1: Can't assign to special loop variable"),
        ("{% include 'x' %}", "line 1: include, extends and import are not available"),
        ("x" * 200_000, "template too long"),
    ],
)
def test_validate_template_errors(source, expected):
    assert validate_template(source).startswith(expected)


@pytest.mark.parametrize(
    "source",
    ["plain", "{{ email }}", "Hi {{ fields.email | upper }}", "{% for i in items %}{{ loop.index }}{% endfor %}",
     "{{ created | format_datetime('%Y', 'Europe/Paris') }}", "{{ x | default_if_empty('-') | to_json }}",
     "{% raw %}{{ not rendered }}{% endraw %}"],
)
def test_validate_template_accepts(source):
    assert validate_template(source) is None


def test_jinja_itself_rejects_unknown_filters_at_compile_time_outside_conditionals():
    import jinja2

    with pytest.raises(jinja2.TemplateAssertionError):
        jinja2.Environment().from_string("{{ x | nosuchfilter }}")
    jinja2.Environment().from_string("{% if a %}{{ x | nosuchfilter }}{% endif %}")  # deferred to runtime


def test_compiled_templates_are_cached(ctx):
    templating._template.cache_clear()
    for _ in range(3):
        render("Hi {{ email }}", ctx)
    assert templating._template.cache_info().hits == 2
