import time
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from jinja2 import ChainableUndefined

from automations import filters as f

PARIS_WINTER = timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-15T10:00:00Z", datetime(2024, 1, 15, 10, tzinfo=UTC)),
        ("2024-01-15T10:00:00+01:00", datetime(2024, 1, 15, 9, tzinfo=UTC)),
        ("2024-01-15", datetime(2024, 1, 15, tzinfo=UTC)),
        ("20240115", datetime(2024, 1, 15, tzinfo=UTC)),
        ("Mon, 15 Jan 2024 10:00:00 +0100", datetime(2024, 1, 15, 9, tzinfo=UTC)),
        ("January 15, 2024 10:00", datetime(2024, 1, 15, 10, tzinfo=UTC)),
        (1705312800, datetime(2024, 1, 15, 10, tzinfo=UTC)),
        ("1705312800", datetime(2024, 1, 15, 10, tzinfo=UTC)),
        (1705312800123, datetime(2024, 1, 15, 10, 0, 0, 123000, tzinfo=UTC)),
        (1705312800.5, datetime(2024, 1, 15, 10, 0, 0, 500000, tzinfo=UTC)),
        (date(2024, 1, 15), datetime(2024, 1, 15, tzinfo=UTC)),
        (datetime(2024, 1, 15, 10), datetime(2024, 1, 15, 10, tzinfo=UTC)),
    ],
)
def test_parse_datetime(value, expected):
    parsed = f.parse_datetime(value)
    assert parsed == expected
    assert parsed.tzinfo is not None


def test_naive_values_are_read_in_the_given_zone():
    parsed = f.parse_datetime("2024-01-15 10:00", tz="Europe/Paris")
    assert parsed.utcoffset() == timedelta(hours=1)
    assert f.parse_datetime("15/01/2024", fmt="%d/%m/%Y") == datetime(2024, 1, 15, tzinfo=UTC)


@pytest.mark.parametrize("value", [None, "", "   ", ChainableUndefined()])
def test_empty_dates(value):
    assert f.parse_datetime(value) is None
    assert f.format_datetime(value) == ""
    assert f.timestamp(value) is None


def test_format_datetime_converts_zone():
    assert f.format_datetime("2024-07-01T10:00:00Z", "%d/%m/%Y %H:%M", "Europe/Paris") == "01/07/2024 12:00"
    assert f.format_datetime(1705312800) == "2024-01-15 10:00"
    assert f.format_datetime("2024-01-15T10:00:00Z", tz="+05:30") == "2024-01-15 15:30"


def test_to_timezone_isoformat_timestamp_add_time():
    assert f.to_timezone("2024-01-15T10:00:00Z", "Europe/Paris").hour == 11
    assert f.isoformat("2024-01-15T10:00:00Z", tz="Europe/Paris") == "2024-01-15T11:00:00+01:00"
    assert f.timestamp("2024-01-15T10:00:00Z") == 1705312800
    assert f.timestamp("2024-01-15T10:00:00Z", milliseconds=True) == 1705312800000
    assert f.add_time("2024-01-31", months=1, hours=2) == datetime(2024, 2, 29, 2, tzinfo=UTC)
    assert f.add_time("2024-01-15", days=-15) == datetime(2023, 12, 31, tzinfo=UTC)


def test_unknown_time_zone_message():
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Base'"):
        f.format_datetime("2024-01-15", tz="Mars/Base")
    with pytest.raises(ValueError, match="unknown time zone"):
        f.to_timezone(None, "../../etc/passwd")  # settings are checked even without a value


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: f.parse_datetime("not a date at all"), "cannot read"),
        (lambda: f.parse_datetime("x" * 10_000), "too long"),
        (lambda: f.parse_datetime(10**30), "out of range"),
        (lambda: f.format_datetime("2024-01-01", "%1000000000Y"), "widths"),
        (lambda: f.add_time("2024-01-01", days=10**12), "reasonable size"),
        (lambda: f.add_time("9999-12-31", days=1), "out of range"),
        (lambda: f.add_time("2024-01-01", months=10**9), "months"),
    ],
)
def test_absurd_dates_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1,234.50", 1234.5), ("1.234,50", 1234.5), ("$ 12", 12), ("(3.5)", -3.5), ("12,5", 12.5),
     ("1,234", 1234), ("1.234.567", 1234567), ("€1.234,56", 1234.56), ("-0,5", -0.5), ("42", 42),
     ("1 000 000", 1000000), (7, 7), (2.5, 2.5), (None, None), ("", None)],
)
def test_to_number(text, expected):
    assert f.to_number(text) == expected


@pytest.mark.parametrize("text", ["abc", "1e999", "nan", "1" * 200])
def test_to_number_rejects(text):
    with pytest.raises(ValueError):
        f.to_number(text)


def test_format_number_locales_and_rounding():
    assert f.format_number(1234.5) == "1,234.50"
    assert f.format_number("1234.5", 2, "de_DE") == "1.234,50"
    assert f.format_number(1234.5, 2, "de-DE") == "1.234,50"
    assert f.format_number(2.675, 2) == "2.68"  # half up, like an invoice
    assert f.format_number(1234567, 0) == "1,234,567"
    assert f.format_number(1234567.5, 1, "hi_IN") == "12,34,567.5"
    assert f.format_number(1234.5, 2, "fr_FR") == "1\u202f234,50"
    assert f.percent(0.256) == "26%"
    assert f.percent(0.256, 1, "de_DE") == "25,6\xa0%"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((1999, "USD", "en_US", True), "$19.99"),
        ((100, "JPY", "en_US", True), "¥100"),
        ((100, "jpy", "ja_JP", True), "￥100"),
        ((1234, "KWD", "en_US", True), "KWD1.234"),
        ((1234567.891, "INR", "hi_IN"), "₹12,34,567.89"),
        ((1234.5, "EUR", "de_DE"), "1.234,50\xa0€"),
        (("19.99", "USD"), "$19.99"),
    ],
)
def test_format_money(args, expected):
    assert f.format_money(*args) == expected


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: f.format_money(1, "XYZ"), "unknown currency 'XYZ'"),
        (lambda: f.format_number(1, 2, "xx_YY"), "unknown locale 'xx_YY'"),
        (lambda: f.format_number(1, 10**6), "decimals"),
        (lambda: f.format_number("1e40"), "too large"),
        (lambda: f.format_money(10**40, "USD"), "too large"),
    ],
)
def test_bad_number_settings(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_text_filters():
    assert f.slugify("Héllo, Wörld! 2024") == "hello-world-2024"
    assert f.truncate_chars("Hello wonderful world", 10) == "Hello won…"
    assert f.truncate_chars("short", 10) == "short"
    assert len(f.truncate_chars("x" * 50, 20, end="...")) == 20
    html = "<p>Hi &amp; bye<br>x</p><script>alert(1)</script><style>p{}</style><div>Two   words</div>"
    assert f.strip_html(html) == "Hi & bye\nx\nTwo words"
    assert f.split("a,b,,c", ",") == ["a", "b", "", "c"]
    assert f.split("a  b") == ["a", "b"]
    assert f.regex_replace("a-b-c", "-", "+") == "a+b+c"
    assert f.regex_replace("Order 12", r"(\d+)", r"#\1") == "Order #12"
    assert f.regex_search("order #123", r"#(\d+)", 1) == "123"
    assert f.regex_search("nothing", r"\d+") is None
    assert f.regex_findall("a1b22", r"\d+") == ["1", "22"]
    assert f.regex_search("www.example.com", r"([a-z]++\.)+com") == "www.example.com"
    assert f.regex_search("ABC", "b", ignorecase=True) == "B"


@pytest.mark.parametrize(
    ("full", "first", "last"),
    [("Ada Lovelace", "Ada", "Lovelace"), ("Ada King Lovelace", "Ada", "King Lovelace"),
     ("Lovelace, Ada", "Ada", "Lovelace"), ("  Cher ", "Cher", ""), (None, "", "")],
)
def test_name_parts(full, first, last):
    assert (f.first_name(full), f.last_name(full)) == (first, last)


@pytest.mark.parametrize("empty", [None, "", "  ", [], {}, ChainableUndefined()])
def test_default_if_empty(empty):
    assert f.default_if_empty(empty, "x") == "x"


@pytest.mark.parametrize("call", [
    lambda: f.regex_search("a" * 60 + "!", "(a|aa)+$"),       # alternation, not nested repetition
    lambda: f.regex_replace("a" * 60 + "!", "(a|aa)+$", "x"),
    lambda: f.regex_findall("a" * 60 + "!", "(?:a|aa)+$"),
])
def test_backtracking_the_shape_check_misses_stops_at_the_deadline(call, monkeypatch):
    monkeypatch.setattr(f, "MAX_REGEX_SECONDS", 0.2)
    started = time.monotonic()
    with pytest.raises(ValueError, match="took longer than 0.2 s"):
        call()
    assert time.monotonic() - started < 5  # fib(60) steps would take years without the deadline


@pytest.mark.parametrize("value", [0, False, "0", [0]])
def test_default_if_empty_keeps_falsy_values(value):
    assert f.default_if_empty(value, "x") == value


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: f.regex_search("a", "(" * 600), "text too long"),
        (lambda: f.regex_search("x" * 200_000, "x"), "text too long"),
        (lambda: f.regex_search("a", "(unclosed"), "invalid regular expression"),
        (lambda: f.regex_search("a" * 40 + "!", "(a+)+$"), "repeats a repetition"),
        (lambda: f.regex_replace("a" * 40 + "!", r"(?:(\w*)*)++x", ""), "repeats a repetition"),
        (lambda: f.regex_findall("x", "((ab)+c)+"), "possessive"),
        (lambda: f.regex_search("abc", "b", 5), "no group"),
        (lambda: f.regex_replace("x" * 50_000, "", "y" * 100), "too large"),
        (lambda: f.truncate_chars("abc", -1), "length"),
        (lambda: f.slugify("x" * 2_000_000), "text too long"),
        (lambda: f.from_json("{bad"), "invalid JSON at line 1 column 2"),
        (lambda: f.to_json({}, indent=100), "indent"),
        (lambda: f.b64decode("!!!"), "base64"),
    ],
)
def test_absurd_text_is_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_json_filters():
    value = {"when": datetime(2024, 1, 15, tzinfo=UTC), "name": "Zoë", "b": 1, "a": ChainableUndefined()}
    assert f.to_json(value) == '{"when": "2024-01-15T00:00:00+00:00", "name": "Zoë", "b": 1, "a": null}'
    assert f.to_json([1], indent=2) == "[\n  1\n]"
    assert f.from_json('{"a": [1, 2]}') == {"a": [1, 2]}
    assert f.from_json({"already": "parsed"}) == {"already": "parsed"}


def test_list_helpers():
    items = [{"price": {"amount": "1,000.50"}}, {"price": {"amount": 2}}, {"price": None}, "junk"]
    assert f.pluck(items, "price.amount") == ["1,000.50", 2, None, None]
    assert f.sum_by(items, "price.amount") == 1002.5
    assert f.pluck(None, "a") == []


def test_encodings_and_hashes():
    assert f.b64encode("héllo") == "aMOpbGxv"
    assert f.b64decode("aMOpbGxv") == "héllo"
    assert f.b64decode("aGk") == "hi"  # unpadded input is accepted
    assert f.b64encode(b"\xfb\xff", urlsafe=True) == "-_8="
    assert f.FILTERS["md5"]("a") == "0cc175b9c0f1b6a831c399e269772661"
    assert f.FILTERS["sha256"]("ada@example.com") == "b5fc85e55755f9e0d030a10ab4429b6b2944855f9a0d60077fe832becbc41d72"
    assert f.hmac_sha256("body", "key") == "515aae133b435d4000956731f68ae5cf5eb85d4f0dc6a546d2bfcd3595ec1ae1"


@pytest.mark.parametrize(("value", "expected"), [("yes", True), ("on", True), ("1", True), ("no", False),
                                                 ("", False), (None, False), (1, True), (0, False)])
def test_to_bool(value, expected):
    assert f.to_bool(value) is expected


def test_every_filter_is_registered():
    assert {"format_datetime", "format_money", "slugify", "to_json", "sha256", "first_name"} <= set(f.FILTERS)
    assert all(callable(func) for func in f.FILTERS.values())
