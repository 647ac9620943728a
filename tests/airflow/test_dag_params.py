"""Trigger conf with a bad name, ref, tag, URL, branch or path is refused by the DAGs' param
schemas (as `airflow dags trigger --conf` and the trigger form are), and the operators
refuse the same at DAG build time; the schema grammar is the store's own."""

from __future__ import annotations

import re
from typing import Any

import pytest

BAD = [  # (dag, conf, the param the error names)
    pytest.param("stylegan2_train", {"dataset_ref": "bad name"}, "dataset_ref", id="ref-space"),
    pytest.param("stylegan2_train", {"dataset_ref": "../x"}, "dataset_ref", id="ref-dotdot"),
    pytest.param("stylegan2_train", {"dataset_ref": "cats@xyz1"}, "dataset_ref",
                 id="ref-bad-id"),
    pytest.param("stylegan2_train", {"dataset_ref": "cats@abc"}, "dataset_ref",
                 id="ref-short-id"),
    pytest.param("stylegan2_train", {"dataset_ref": "cats:"}, "dataset_ref", id="ref-colon"),
    pytest.param("stylegan2_train", {"dataset_ref": "cats\n"}, "dataset_ref",
                 id="ref-trailing-newline"),
    pytest.param("stylegan2_train", {"dataset_ref": "lsun-c\u0430t"}, "dataset_ref",
                 id="ref-cyrillic-lookalike"),
    pytest.param("stylegan2_train", {"dataset_ref": "x" * 129}, "dataset_ref", id="ref-long"),
    pytest.param("stylegan2_train", {"tags": ["latest"]}, "tags", id="tag-latest"),
    pytest.param("stylegan2_train", {"tags": ["v3"]}, "tags", id="tag-number"),
    pytest.param("stylegan2_train", {"tags": ["a/b"]}, "tags", id="tag-slash"),
    pytest.param("stylegan2_train", {"tags": ["-x"]}, "tags", id="tag-dash"),
    pytest.param("stylegan2_train", {"tags": "demo"}, "tags", id="tags-a-string"),
    pytest.param("stylegan2_train", {"dataset_remote": "file:///etc"}, "dataset_remote",
                 id="remote-not-http"),
    pytest.param("stylegan2_train", {"pretrained": "--out=/x"}, "pretrained",
                 id="pretrained-option"),
    pytest.param("stylegan2_train", {"git_commit": "HEAD; rm -rf /"}, "git_commit",
                 id="commit-junk"),
    pytest.param("stylegan2_train", {"batch": 1}, "batch", id="batch-one"),
    pytest.param("stylegan2_train", {"snapshot_ticks": 0}, "snapshot_ticks",
                 id="snapshot-ticks-zero"),
    pytest.param("stylegan2_train", {"total_kimg": 0}, "total_kimg", id="total-kimg-zero"),
    pytest.param("stylegan2_train", {"project_steps": 0}, "project_steps",
                 id="project-no-steps"),
    pytest.param("stylegan2_train", {"project_targets": ""}, "project_targets",
                 id="project-empty-path"),
    pytest.param("stylegan2_train", {"project_targets": "-x"}, "project_targets",
                 id="project-dash"),
    pytest.param("stylegan2_prepare", {"dataset_name": "Cats"}, "dataset_name",
                 id="name-upper"),
    pytest.param("stylegan2_prepare", {"dataset_name": ".hidden"}, "dataset_name",
                 id="name-dot"),
    pytest.param("stylegan2_prepare", {"dataset_name": "a" * 129}, "dataset_name",
                 id="name-long"),
    pytest.param("stylegan2_prepare", {"tags": ["ok", "LATEST"]}, "tags", id="tag-latest-case"),
    pytest.param("stylegan2_prepare", {"tags": ["a", "a"]}, "tags", id="tags-repeated"),
    pytest.param("stylegan2_prepare", {"source_url": "ftp://x/cat.zip"}, "source_url",
                 id="source-ftp"),
    pytest.param("stylegan2_prepare", {"md5_url": "cat.zip.md5"}, "md5_url", id="md5-not-url"),
    pytest.param("stylegan2_watch_repo", {"repo": "--upload-pack=touch /tmp/x"}, "repo",
                 id="repo-option"),
    pytest.param("stylegan2_watch_repo", {"branch": "a..b"}, "branch", id="branch-dotdot"),
    pytest.param("stylegan2_watch_repo", {"branch": "-f"}, "branch", id="branch-dash"),
    pytest.param("stylegan2_watch_repo", {"settings_path": "../../etc/passwd"},
                 "settings_path", id="settings-escape"),
]


def _validate(dagbag: Any, dag_id: str, conf: dict[str, Any]) -> None:
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict(dagbag.dags[dag_id].params)
    params.update(conf)
    params.validate()


@pytest.mark.parametrize(("dag_id", "conf", "param"), BAD)
def test_bad_conf_is_refused_by_the_schema(dagbag: Any, dag_id: str, conf: dict[str, Any],
                                           param: str) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match=param):
        _validate(dagbag, dag_id, conf)


@pytest.mark.parametrize(("dag_id", "conf"), [
    pytest.param("stylegan2_train", {"dataset_ref": "lsun-cat-256"}, id="ref-name"),
    pytest.param("stylegan2_train", {"dataset_ref": "lsun-cat-256:v12"}, id="ref-number"),
    pytest.param("stylegan2_train", {"dataset_ref": "lsun-cat-256:Demo_1.0"}, id="ref-tag"),
    pytest.param("stylegan2_train", {"dataset_ref": "lsun-cat-256@0123abcd"}, id="ref-id"),
    pytest.param("stylegan2_train", {"tags": ["nightly", "Run-7"], "git_commit": "a" * 40,
                                     "dataset_remote": "https://data.example/store"},
                 id="tags-commit-remote"),
    pytest.param("stylegan2_train", {"project_targets": "/data/my cats", "project_steps": 500},
                 id="projection"),
    pytest.param("stylegan2_prepare", {"dataset_name": "lsun_cat.256", "source_url": "sample",
                                       "md5_url": None}, id="prepare-sample"),
    pytest.param("stylegan2_watch_repo", {"repo": "owner/name", "branch": "feature/x-1",
                                          "settings_path": "conf/stylegan2.yaml"},
                 id="watch"),
])
def test_good_conf_passes(dagbag: Any, dag_id: str, conf: dict[str, Any]) -> None:
    _validate(dagbag, dag_id, conf)


@pytest.mark.parametrize("text", [
    "lsun-cat-256", "a", "0", "a.b_c-d", "x" * 128, "x" * 129, "Cats", ".x", "-x", "_x", "a b",
    "a/b", "a\n", "c\u0430t", "caf\u00e9", "a:b", "a@b", "",
])
def test_the_name_pattern_is_the_stores_grammar(text: str) -> None:
    """The schema pattern and the store's validator accept exactly the same names."""
    from stylegan_airflow.params import NAME_PATTERN

    from stylegan_ops.errors import StageError
    from stylegan_ops.store.model import validate_name

    try:
        validate_name(text)
        store_ok = True
    except StageError:
        store_ok = False
    assert bool(re.search(NAME_PATTERN, text)) is store_ok


@pytest.mark.parametrize("text", [
    "n", "n:latest", "n:v1", "n:v12", "n:tag", "n:Tag.1", "n@abcd", "n@" + "f" * 64,
    "n@abc", "n@ABCD", "n@" + "f" * 65, "n:", "n::", "n:a b", "N:v1", "n:a/b", "n\n",
    "n:v1\n", "@abcd", ":v1",
])
def test_a_ref_the_schema_takes_parses_and_one_it_refuses_does_not(text: str) -> None:
    """Refs the schema refuses never parse; a ref it takes parses unless its selector is one
    of the number forms only parse_ref (at run time) refuses (v0, V3)."""
    from stylegan_airflow.params import REF_PATTERN

    from stylegan_ops.errors import StageError
    from stylegan_ops.store.model import parse_ref

    try:
        parse_ref(text)
        parses = True
    except StageError:
        parses = False
    assert bool(re.search(REF_PATTERN, text)) is parses


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"name": "Bad Name"}, "Bad Name", id="name"),
    pytest.param({"tags": ["latest"]}, "latest", id="tag-latest"),
    pytest.param({"tags": "demo"}, "tags must be a list", id="tags-string"),
    pytest.param({"inputs": "resolve_dataset"}, "inputs must be a list", id="inputs-string"),
    pytest.param({"source": ""}, "source", id="source-empty"),
])
def test_version_operator_refuses_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    from stylegan_airflow.operators import DatasetVersionOperator

    args = {"task_id": "commit", "source": "/tmp/x", "name": "cats", **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        DatasetVersionOperator(**args)


def test_version_operator_takes_templates_and_good_values() -> None:
    from stylegan_airflow.operators import DatasetVersionOperator

    DatasetVersionOperator(task_id="a", source="/x", name="cats", tags=["demo", "v1.0"])
    DatasetVersionOperator(task_id="b", source="{{ x }}", name="{{ params.n }}",
                           tags="{{ params.tags }}", inputs=["plan"])


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"arguments": "--out x"}, "arguments must be a list", id="arguments-string"),
    pytest.param({"profile": ""}, "profile", id="profile-empty"),
])
def test_stage_operator_refuses_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    from stylegan_airflow.operators import StageOperator

    with pytest.raises(ValueError, match=message):
        StageOperator(task_id="t", stage="info", **kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"repo": "--upload-pack=touch /tmp/pwned"}, "invalid repo", id="repo-option"),
    pytest.param({"branch": "main\n"}, "invalid branch", id="branch-newline"),
    pytest.param({"branch": "a..b"}, "invalid branch", id="branch-dotdot"),
    pytest.param({"settings_path": "/etc/passwd"}, "invalid settings_path", id="abs-path"),
])
def test_sensor_refuses_what_git_would_misread(kwargs: dict[str, Any], message: str) -> None:
    from stylegan_airflow.sensors import GitBackend, GitCommitSensor

    with pytest.raises(ValueError, match=message):
        GitCommitSensor(task_id="w", **{"repo": "owner/name", "backend": "git", **kwargs})
    if "settings_path" not in kwargs:  # and the backend, which rendered values reach
        with pytest.raises(ValueError, match=message):
            GitBackend(kwargs.get("repo", "owner/name"), kwargs.get("branch", "main"))
