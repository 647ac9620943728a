"""The one validator of names, tags and refs, and value objects of the types they claim."""

from __future__ import annotations

import pytest

from stylegan_ops.errors import StageError
from stylegan_ops.store.model import (
    Entry,
    Lineage,
    Manifest,
    Ref,
    Version,
    check_path,
    parse_ref,
    validate_name,
    validate_tag,
)

SHA = "ab" * 32


@pytest.mark.parametrize("name", [
    pytest.param("lsun-cat-256", id="plain"), pytest.param("a", id="one-char"),
    pytest.param("a.b_c-d", id="punctuation"), pytest.param("0" + "x" * 127, id="128-chars"),
])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", [
    pytest.param("cats\n", id="trailing-newline"),  # '$' in a regex would accept it
    pytest.param("c\u0430ts", id="cyrillic-a"), pytest.param("\uff43ats", id="fullwidth-c"),
    pytest.param("cats\u0663", id="arabic-indic-digit"), pytest.param("ca\u200bts", id="zwsp"),
    pytest.param(".cats", id="leading-dot"), pytest.param("-cats", id="leading-dash"),
    pytest.param("_cats", id="leading-underscore"), pytest.param("Cats", id="upper"),
    pytest.param("a/b", id="slash"), pytest.param("a\\b", id="backslash"),
    pytest.param("..", id="dotdot"), pytest.param("", id="empty"),
    pytest.param("c" * 129, id="129-chars"), pytest.param(7, id="not-a-string"),
    pytest.param(None, id="none"),
])
def test_bad_names(name: object) -> None:
    with pytest.raises(StageError, match="invalid version name"):
        validate_name(name)


@pytest.mark.parametrize("tag", [
    pytest.param("latest", id="latest"), pytest.param("LATEST", id="latest-upper"),
    pytest.param("v3", id="number"), pytest.param("V3", id="number-upper"),
    pytest.param("b\u00e9st", id="accent"), pytest.param("best\n", id="newline"),
    pytest.param("-x", id="leading-dash"), pytest.param(".x", id="leading-dot"),
    pytest.param("a/b", id="slash"), pytest.param("t" * 129, id="too-long"),
    pytest.param(3, id="not-a-string"),
])
def test_bad_tags(tag: object) -> None:
    with pytest.raises(StageError, match="invalid tag"):
        validate_tag(tag)


@pytest.mark.parametrize(("text", "ref"), [
    pytest.param("cats", Ref("cats"), id="name"),
    pytest.param("cats:latest", Ref("cats"), id="latest"),
    pytest.param("cats:v12", Ref("cats", number=12), id="number"),
    pytest.param("cats:v1.0", Ref("cats", tag="v1.0"), id="dotted-tag"),
    pytest.param("cats:Best", Ref("cats", tag="Best"), id="tag"),
    pytest.param("cats@abcd", Ref("cats", id_prefix="abcd"), id="id-prefix"),
])
def test_refs(text: str, ref: Ref) -> None:
    assert parse_ref(text) == ref == Ref.parse(text)


@pytest.mark.parametrize("text", [
    pytest.param("cats:v\u0663", id="arabic-digit"), pytest.param("cats:v0", id="v0"),
    pytest.param("cats:v01", id="leading-zero"), pytest.param("cats:", id="empty-selector"),
    pytest.param("cats:V3", id="upper-v"), pytest.param("cats@abc", id="short-id"),
    pytest.param("cats@ABCD", id="upper-hex"), pytest.param("cats@" + "a" * 65, id="long-id"),
    pytest.param("cats:a/b", id="tag-slash"), pytest.param("c\u0430ts", id="lookalike-name"),
    pytest.param("cats:v1\n", id="newline"), pytest.param("x" * 300, id="too-long"),
    pytest.param(["cats"], id="not-a-string"),
])
def test_bad_refs(text: object) -> None:
    with pytest.raises(StageError):
        parse_ref(text)


@pytest.mark.parametrize("path", [
    pytest.param("../x", id="dotdot"), pytest.param("a/../../x", id="inner-dotdot"),
    pytest.param("/etc/x", id="absolute"), pytest.param("a\\b", id="backslash"),
    pytest.param("a//b", id="empty-part"), pytest.param("./a", id="dot"),
    pytest.param("a\x00b", id="nul"), pytest.param("a\nb", id="newline"),
    pytest.param("p" * 256, id="part-too-long"), pytest.param("", id="empty"),
])
def test_unsafe_manifest_paths(path: str) -> None:
    with pytest.raises(StageError, match="unsafe path"):
        check_path(path)


def test_manifest_refuses_a_file_that_is_also_a_directory() -> None:
    with pytest.raises(StageError, match="lies under the file 'a'"):
        Manifest((Entry("a", 1, SHA), Entry("a/b", 1, SHA)))
    Manifest((Entry("a", 1, SHA), Entry("ab/c", 1, SHA)))  # a prefix of a name is fine


@pytest.mark.parametrize(("entry", "message"), [
    pytest.param({"path": "a", "size": "1", "sha256": SHA}, "bad manifest entry", id="size-str"),
    pytest.param({"path": "a", "size": True, "sha256": SHA}, "bad manifest entry",
                 id="size-bool"),
    pytest.param({"path": "a", "size": -1, "sha256": SHA}, "bad manifest entry", id="negative"),
    pytest.param({"path": 5, "size": 1, "sha256": SHA}, "unsafe path", id="path-int"),
    pytest.param([], "must be a JSON object", id="not-object"),
])
def test_manifest_entries_have_their_types(entry: object, message: str) -> None:
    with pytest.raises(StageError, match=message):
        Entry.from_dict(entry)


@pytest.mark.parametrize(("lineage", "message"), [
    pytest.param({"params": [1]}, "params must be a JSON object", id="params-list"),
    pytest.param({"params": "x"}, "params must be a JSON object", id="params-str"),
    pytest.param({"inputs": "cats@abcd"}, "inputs must be a list", id="inputs-str"),
    pytest.param({"inputs": {"a": 1}}, "inputs must be a list", id="inputs-dict"),
    pytest.param({"inputs": ["cats"]}, "not a version ref", id="input-unpinned"),
    pytest.param({"inputs": [3]}, "not a version ref", id="input-int"),
    pytest.param({"try_number": "2"}, "try_number must be an integer", id="try-str"),
    pytest.param({"try_number": 1.5}, "try_number must be an integer", id="try-float"),
    pytest.param({"try_number": True}, "try_number must be an integer", id="try-bool"),
    pytest.param({"try_number": -1}, "try_number must be an integer", id="try-negative"),
    pytest.param({"dag_id": 3}, "dag_id must be a one-line string", id="dag-int"),
    pytest.param({"run_id": "a\nb"}, "run_id must be a one-line string", id="run-newline"),
    pytest.param({"dag": "x"}, "unknown lineage fields: dag", id="unknown"),
    pytest.param(["x"], "lineage must be a JSON object", id="not-object"),
])
def test_lineage_fields_have_the_types_they_claim(lineage: object, message: str) -> None:
    with pytest.raises(StageError, match=message):
        Lineage.from_dict(lineage)


def test_lineage_checks_direct_construction_too() -> None:
    with pytest.raises(StageError, match="not a version ref"):
        Lineage(inputs=("../x",))
    good = Lineage.from_dict({"try_number": 2, "inputs": ["cats@abcd"], "params": {"k": [1]}})
    assert good.inputs == ("cats@abcd",) and Lineage.from_dict(good.to_dict()) == good


@pytest.mark.parametrize(("change", "message"), [
    pytest.param({"number": "2"}, "number must be an integer", id="number-str"),
    pytest.param({"number": 0}, "number must be an integer >= 1", id="number-zero"),
    pytest.param({"number": True}, "number must be an integer", id="number-bool"),
    pytest.param({"id": "xyz"}, "bad id", id="bad-id"),
    pytest.param({"name": "Cats"}, "invalid version name", id="bad-name"),
    pytest.param({"meta": [1]}, "meta must be a JSON object", id="meta-list"),
    pytest.param({"created": 5}, "created must be a string", id="created-int"),
    pytest.param({"file_count": "3"}, "file_count must be an integer", id="count-str"),
    pytest.param({"lineage": {"inputs": "x"}}, "inputs must be a list", id="lineage"),
])
def test_version_records_have_the_types_they_claim(change: dict[str, object],
                                                   message: str) -> None:
    record = {"name": "cats", "number": 2, "id": SHA, "created": "2026-01-01T00:00:00Z",
              "lineage": {}, "meta": {}, "file_count": 1, "total_size": 1}
    assert Version.from_dict(record).number == 2
    with pytest.raises(StageError, match=f"corrupt version record: .*{message}"):
        Version.from_dict({**record, **change})
