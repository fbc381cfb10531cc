import pytest

from automations.mapping import (
    MappingError,
    PathSyntaxError,
    compile_path,
    extract,
    sample_paths,
    validate_path,
)

ORDER = {
    "id": "ord_1",
    "total": 42.5,
    "count": 3,
    "paid": True,
    "note": None,
    "customer": {"email": "ada@example.com", "tags": ["vip", "beta"]},
    "items": [
        {"name": "pen", "price": 5},
        {"name": "book", "price": 20},
        {"name": "lamp", "price": 35},
    ],
    "content-type": "json",
}


def one(path, document=ORDER, **field):
    return extract([{"name": "f", "path": path, **field}], document)["f"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.id", "ord_1"),
        ("$.total", 42.5),
        ("$.count", 3),
        ("$.paid", True),
        ("$.customer.tags", ["vip", "beta"]),
        ("$.customer", {"email": "ada@example.com", "tags": ["vip", "beta"]}),
        ("$.items[0].price", 5),
        ("$.items[-1].name", "lamp"),
        ("$['content-type']", "json"),
    ],
)
def test_single_match_keeps_type(path, expected):
    value = one(path)
    assert value == expected
    assert type(value) is type(expected)


def test_explicit_null_is_a_match_not_a_default():
    assert one("$.note", default="fallback") is None


def test_no_match_gives_default_or_none():
    assert one("$.missing", default="n/a") == "n/a"
    assert one("$.missing") is None
    assert one("$.customer.phone", default=0) == 0


def test_several_matches_give_a_list():
    assert one("$.items[*].name") == ["pen", "book", "lamp"]
    assert one("$..price") == [5, 20, 35]


def test_filter_expressions():
    assert one("$.items[?(@.price > 10)].name") == ["book", "lamp"]
    assert one("$.items[?(@.price > 30)].name") == "lamp"
    assert one("$.items[?(@.price > 100)].name", default=[]) == []
    assert one("$.items.`len`") == 3


def test_fields_are_extracted_in_order():
    fields = [{"name": "email", "path": "$.customer.email"}, {"name": "n", "path": "$.count"}]
    assert list(extract(fields, ORDER).items()) == [("email", "ada@example.com"), ("n", 3)]


@pytest.mark.parametrize(
    ("document", "path", "expected"),
    [
        (None, "$.a", None),
        (None, "$", None),
        ("plain text body", "$.a", None),
        ("plain text body", "$", "plain text body"),
        ([{"a": 1}, {"a": 2}], "$[*].a", [1, 2]),
        ({"a": {"b": 1}}, "$.a[0]", None),
    ],
)
def test_odd_documents(document, path, expected):
    assert one(path, document) == expected


def test_invalid_path_names_the_field():
    with pytest.raises(MappingError) as info:
        extract([{"name": "email", "path": "$.a["}], ORDER)
    assert info.value.field == "email"
    assert str(info.value).startswith("field 'email': invalid path '$.a['")
    assert "position 5" in str(info.value)


def test_runtime_failure_names_the_field():
    with pytest.raises(MappingError) as info:
        extract([{"name": "n", "path": "$.count.`sub(/x/, y)`"}], ORDER)
    assert info.value.field == "n"
    assert "failed on this payload" in info.value.message


def test_path_arithmetic_cannot_amplify_payload_strings():
    with pytest.raises(MappingError, match="too large"):
        extract([{"name": "s", "path": "$.id * 100000000"}], ORDER)
    assert one("$.count * 2") == 6


def test_mapping_error_without_field():
    assert str(MappingError(None, "boom")) == "boom"


def test_compile_path_is_cached():
    assert compile_path("$.customer.email") is compile_path("$.customer.email")


@pytest.mark.parametrize(
    ("path", "fragment", "position"),
    [
        ("$.a b", "unexpected 'b' at position 5", 5),
        ("$.a]", "unexpected ']' at position 4", 4),
        ("$.a.#", "unexpected character '#' at position 5", 5),
        ("$$", "unexpected '$' at position 2", 2),
        ("$.a[?(@.x >)]", "unexpected ')' at position 12", 12),
        ("$.a[", "ends too early at position 5", 5),
        ("$..", "ends too early at position 4", 4),
        ("$.'x", "unclosed quote", 5),
        ("$.a.`nope`", "unknown operator `nope` at position 5", 5),
        ("a.b", "must start with '$'", 1),
        ("email", "must start with '$'", 1),
    ],
)
def test_syntax_errors_name_the_position(path, fragment, position):
    assert fragment in validate_path(path)
    with pytest.raises(PathSyntaxError) as info:
        compile_path(path)
    assert info.value.position == position
    assert isinstance(info.value, ValueError)
    assert "Traceback" not in info.value.message


@pytest.mark.parametrize(
    ("path", "fragment"),
    [("", "is empty"), ("   ", "is empty"), (None, "is empty"), (5, "must be text"), ("$." + "a" * 2000, "too long")],
)
def test_unusable_paths(path, fragment):
    assert fragment in validate_path(path)


@pytest.mark.parametrize(
    "path",
    ["$", "$.a", "$.a.b[0]", "$.items[*].name", "$..price", "$['content-type']", '$."x y"',
     "$.items[?(@.price > 10)].name", "$.items[?(@.name == 'pen')]", "$.items.`len`", "  $.a  "],
)
def test_valid_paths(path):
    assert validate_path(path) is None


def test_sample_paths_lists_containers_and_leaves():
    listing = sample_paths({"a": {"b": [1, 2]}, "ok": True, "n": None, "s": "x", "f": 1.5})
    assert [(e["path"], e["type"]) for e in listing] == [
        ("$", "object"), ("$.a", "object"), ("$.a.b", "array"), ("$.a.b[0]", "number"),
        ("$.ok", "boolean"), ("$.n", "null"), ("$.s", "string"), ("$.f", "number"),
    ]
    assert listing[2]["size"] == 2 and listing[2]["value"] is None
    assert listing[3]["value"] == 1


def test_sample_paths_respects_limit_and_empty_bodies():
    assert len(sample_paths({f"k{i}": i for i in range(100)}, limit=10)) == 10
    assert sample_paths(None) == []
    assert sample_paths("text") == [{"path": "$", "value": "text", "type": "string"}]


ODD_KEYS = ["a b", "content-type", "x.y", "it's", 'q"d', "123", "", "back\\slash", "where", "true", "null",
            "and", "é", "@x", "$", "*", "[0]", "-a", "len", "日本"]


@pytest.mark.parametrize("key", ODD_KEYS)
def test_sample_paths_round_trip_through_the_parser(key):
    document = {key: {"inner": [{key: "leaf"}]}}
    for entry in sample_paths(document):
        matches = [m.value for m in compile_path(entry["path"]).find(document)]
        assert len(matches) == 1, entry["path"]
        if entry["type"] == "string":
            assert matches[0] == "leaf"


def test_simple_keys_use_dot_notation():
    paths = [e["path"] for e in sample_paths({"content-type": 1, "email": 2})]
    assert paths == ["$", "$['content-type']", "$.email"]


@pytest.mark.parametrize("path", ["$", "$.a", "$.a.b", "$['a b']", "$['a b'].c", "$.n", "$.missing.b", "$.list.b",
                                  "$.text.b", "$.a.none", "$.a.zero", "$.a.empty"])
@pytest.mark.parametrize("document", [
    {"a": {"b": 1, "none": None, "zero": 0, "empty": ""}, "a b": {"c": [1, 2]}, "n": None, "list": [{"b": 1}],
     "text": "b"},
    [{"a": 1}], "plain text", None, {"a": []}, {},
])
def test_paths_naming_only_members_find_what_jsonpath_ng_finds(path: str, document) -> None:
    """Such paths are looked up directly (mapping._plain_keys): a member is found only in an
    object (not in a list or a string), and a member whose value is null is a match."""
    from jsonpath_ng.ext import parse

    from automations.mapping import _plain_keys

    assert _plain_keys(path) is not None
    expected = [m.value for m in parse(path).find(document)]
    got = extract([{"name": "f", "path": path, "default": "dflt"}], document)["f"]
    assert got == (expected[0] if len(expected) == 1 else "dflt" if not expected else expected)
