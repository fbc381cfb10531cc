"""Whatever arrives is kept; what can be parsed is parsed; nothing is rejected for its type."""
import json

import pytest

from automations.inbound import BodyRejected, parse_body

MULTIPART = (
    b"--XyZ\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nann@example.com\r\n"
    b"--XyZ\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\na\r\n"
    b"--XyZ\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\nb\r\n"
    b"--XyZ\r\nContent-Disposition: form-data; name=\"cv\"; filename=\"cv.pdf\"\r\n"
    b"Content-Type: application/pdf\r\n\r\n%PDF-1.4 binary\r\n--XyZ--\r\n"
)


@pytest.mark.parametrize("content_type, raw, kind, value", [
    ("application/json", b'{"a": 1, "b": [true, null]}', "json", {"a": 1, "b": [True, None]}),
    ("application/json; charset=utf-8", '{"name": "Zoë"}'.encode(), "json", {"name": "Zoë"}),
    ("application/vnd.api+json", b"[1, 2]", "json", [1, 2]),
    ("application/x-www-form-urlencoded", b"a=1&b=x+y&b=z&empty=", "form",
     {"a": "1", "b": ["x y", "z"], "empty": ""}),
    ("multipart/form-data; boundary=XyZ", MULTIPART, "multipart",
     {"email": "ann@example.com", "tag": ["a", "b"],
      "cv": {"filename": "cv.pdf", "content_type": "application/pdf", "size": 15}}),
    ("application/xml", b'<order id="7"><item>a</item><item>b</item><total>3.50</total></order>', "xml",
     {"order": {"@id": "7", "item": ["a", "b"], "total": "3.50"}}),
    ("text/xml", b'<n:a xmlns:n="urn:x"><n:b>1</n:b></n:a>', "xml", {"a": {"b": "1"}}),
    ("text/plain", b"hello there", "text", "hello there"),
    (None, b'{"sniffed": true}', "json", {"sniffed": True}),
    ("text/plain", b"[1,2", "text", "[1,2"),
    ("application/octet-stream", b"plain words", "text", "plain words"),
    ("image/png", b"\x89PNG\r\n\x1a\n\x00\xff", "binary", None),
    ("application/json", b"", "empty", None),
    # the charset a form or XML body is labelled with: old pages post Windows-1252 / Latin-1
    ("application/x-www-form-urlencoded; charset=ISO-8859-1", b"name=Jos%E9+Mar%EDa", "form",
     {"name": "José María"}),
    ("application/x-www-form-urlencoded; charset=windows-1252", b"q=%93hi%94", "form", {"q": "\u201chi\u201d"}),
    ("application/x-www-form-urlencoded", b"name=Jos%C3%A9", "form", {"name": "José"}),
    ("application/x-www-form-urlencoded", b"name=Jos%E9&ok=1", "form", {"name": "Jos\ufffd", "ok": "1"}),
    ("application/xml; charset=ISO-8859-1", b"<a>Jos\xe9</a>", "xml", {"a": "José"}),
    ("text/xml; charset=windows-1252", b'<?xml version="1.0" encoding="UTF-8"?><a>\x93q\x94</a>', "xml",
     {"a": "\u201cq\u201d"}),  # RFC 7303: the header's charset wins over the declaration
    ("application/xml", b'<?xml version="1.0" encoding="ISO-8859-1"?><a>Jos\xe9</a>', "xml", {"a": "José"}),
])
def test_parses_by_content_type(content_type, raw, kind, value):
    parsed = parse_body(content_type, raw)
    assert (parsed.kind, parsed.value, parsed.error) == (kind, value, None)


@pytest.mark.parametrize("content_type, raw, needle", [
    ("application/json", b'{"a": ', "not valid JSON"),
    ("application/json", b"\xff\xfe{", "not valid JSON"),
    ("application/xml", b"<a><b></a>", "not acceptable XML"),
    ("multipart/form-data", b"no boundary here", "no valid boundary"),
])
def test_claimed_type_that_does_not_parse_is_kept_as_text_with_the_reason(content_type, raw, needle):
    parsed = parse_body(content_type, raw)
    assert parsed.kind == "text"
    assert needle in parsed.error
    assert isinstance(parsed.value, str)


def test_json_error_names_line_and_column():
    parsed = parse_body("application/json", b'{\n  "a": 1,\n  "b": }')
    assert "line 3 column 8" in parsed.error
    with pytest.raises(json.JSONDecodeError):
        json.loads(parsed.value)


@pytest.mark.parametrize("content_type, raw", [
    ("application/json", b"[" * 100_000),                      # would blow the parser's recursion
    ("application/json", b"[" * 65 + b"]" * 65),               # just past the depth limit
    ("application/json", b"[" + b"0," * 200_000 + b"0]"),     # too many values
    (None, b'{"a": ' * 70 + b"1" + b"}" * 70),                 # unlabelled JSON gets the same limits
    ("application/xml", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>'),
    ("text/xml", b'<!DOCTYPE x SYSTEM "file:///etc/passwd"><x/>'),
])
def test_abusive_json_is_refused(content_type, raw):
    with pytest.raises(BodyRejected):
        parse_body(content_type, raw)


def test_json_at_the_limits_is_accepted():
    assert parse_body("application/json", b"[" * 64 + b"]" * 64).kind == "json"
