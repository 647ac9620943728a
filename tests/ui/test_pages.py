"""The StyleGAN2 page over a filled store: versions, lineage, metrics, images, compare."""

from __future__ import annotations

import re
from html import unescape as html_unescape
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest

from tests.ui.conftest import HTML
from tests.ui.storefill import (
    CODE,
    COMMIT,
    LATER_RUN,
    PREPARE_RUN,
    REUSE_RUN,
    TRAIN_RUN,
    TRAINED_GRIDS,
    key_of,
    pinned,
    tree,
)

NAMES = ["lsun-cat-256", "stylegan2-pretrained-network", "stylegan2-trained-network",
         "stylegan2-evaluation-pretrained", "stylegan2-evaluation-ours",
         "stylegan2-generated-pretrained", "stylegan2-generated-ours"]


def hrefs(html: str) -> list[str]:
    return [unquote(h.replace("&amp;", "&")) for h in re.findall(r'href="([^"]+)"', html)]


def test_versions_page_lists_every_name_version_and_lineage(client: Any,
                                                            filled: tuple[Path, Any]) -> None:
    res = client.get("/", headers=HTML)
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    html = res.text
    for name in NAMES:
        assert f'data-name="{name}"' in html
    # numbers, tags, sizes, creation times
    assert ">v1<" in html and ">v2<" in html and '<span class="tag">demo</span>' in html
    assert "163 B" in html and re.search(r"<time datetime=\"\d{4}-\d\d-\d\dT", html)
    # the producing DAG run, as a link into the Airflow UI (run ids quoted as the UI does)
    assert (f'href="/dags/stylegan2_prepare/runs/{quote(PREPARE_RUN, safe="")}/tasks/commit"'
            in html)
    assert f"/dags/stylegan2_train/runs/{TRAIN_RUN}/tasks/commit_ours_evaluation" in html
    assert 'target="_top"' in html  # inside the UI's iframe, Airflow links leave the frame
    assert COMMIT[:12] in html
    # input versions click through
    made = filled[1]
    assert f"/versions/{pinned(made['data2'])}" in hrefs(html)
    # stand-in metrics are labelled where they appear
    assert "STAND-IN" in html


def test_input_links_resolve_to_the_input_version(client: Any, filled: tuple[Path, Any]
                                                  ) -> None:
    made = filled[1]
    page = client.get("/versions/stylegan2-evaluation-ours:v2", headers=HTML).text
    inputs = [h for h in hrefs(page) if h.startswith("/versions/") and "@" in h]
    assert f"/versions/{pinned(made['ournet2'])}" in inputs
    assert f"/versions/{pinned(made['data2'])}" in inputs
    for link in inputs:
        res = client.get(link, headers=HTML)
        assert res.status_code == 200, link
    net = client.get(f"/versions/{pinned(made['ournet2'])}", headers=HTML).text
    assert "stylegan2-trained-network" in net and "v2" in net
    assert "fakes at 8 kimg" in net  # its fakes grids are on its own page


def test_version_page_shows_lineage_params_meta_and_files(client: Any) -> None:
    html = client.get("/versions/lsun-cat-256:demo", headers=HTML).text
    assert "lsun-cat-256" in html and "v1" in html
    assert COMMIT in html and "max_images" in html
    assert "/runs/stylegan2_prepare/" in html  # all versions of that run
    for path in ("dataset.json", "reals.png", "lsun-cat-256-r02.tfrecords"):
        assert f"/{path}\"" in html


@pytest.mark.parametrize(("ref", "lines"), [
    pytest.param("stylegan2-evaluation-pretrained:v1",
                 ["fid50k: 64 images, detector inception, ψ 1.0, seed 123, 41.5 s",
                  "swd: 64 images, detector none, ψ 1.0, seed 123, 2.25 s"], id="meta-seconds"),
    pytest.param("stylegan2-evaluation-ours:v2",
                 ["fid50k@stand-in: 64 images, detector inception, ψ 1.0, seed 123",
                  "swd: 64 images, detector none, ψ 1.0, seed 123"], id="no-seconds"),
])
def test_evaluation_records_show_their_options_and_the_metas_timings(
        client: Any, ref: str, lines: list[str]) -> None:
    """Records carry no timings (identical evaluations are one version): the seconds come
    from the version's meta, and a version without them shows none rather than 'None s'."""
    html = client.get(f"/versions/{ref}", headers=HTML).text
    shown = re.findall(r'<p class="muted small">([^<]*)</p>', html)
    assert [s for s in shown if " images, detector " in s] == lines


def tab(run_id: str) -> str:
    """A run's page: what its tab in the Airflow UI shows (links to it stay in the frame)."""
    return f"/runs/stylegan2_train/{quote(run_id, safe='')}"


def section(html: str, start: str, end: str) -> str:
    found = re.search(f"{start}(.*?){end}", html, re.S)
    assert found is not None, start
    return found.group(1)


def plain(fragment: str) -> str:
    return " ".join(html_unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


@pytest.mark.parametrize(("ref", "uses"), [
    pytest.param("stylegan2-trained-network:v2", [
        (LATER_RUN, "commit_trained_network try 1", "cache hit"),
        (REUSE_RUN, "commit_trained_network try 2", "cache hit"),
        (REUSE_RUN, "commit_trained_network try 1", "cache hit")], id="reused-thrice"),
    pytest.param("stylegan2-generated-pretrained:v1", [
        (REUSE_RUN, "commit_gen_pre try 1", "same content")], id="same-content"),
    pytest.param("stylegan2-generated-ours:v2", [], id="never-reused"),
])
def test_version_page_says_who_computed_it_and_which_runs_reused_it(
        client: Any, filled: tuple[Path, Any], ref: str,
        uses: list[tuple[str, str, str]]) -> None:
    version = client.get(f"/api/versions/{ref}").json()
    html = client.get(f"/versions/{ref}", headers=HTML).text
    reuse = section(html, '<div class="reuse" id="reuse">', "</div>")
    maker = version["lineage"]["run_id"]
    computed = section(reuse, '<td id="computed-by">', "</td>")
    assert plain(computed).startswith(f"run {maker} (stylegan2_train, task ")
    assert f'href="{tab(maker)}" title=' in computed
    rows = re.findall(r'<tr data-run="([^"]+)"><td>(.*?)</td>\s*<td>(.*?)</td>\s*'
                      r'<td class="reason">(.*?)</td>', reuse, re.S)
    assert [(run, plain(task), plain(why).split(" key ")[0]) for run, _, task, why in rows] \
        == uses
    for run, link, _, _ in rows:  # each run links to its own page (the ids quoted)
        assert f'href="{tab(run)}" title=' in link
    if not uses:
        assert "No later run has reused this version." in reuse
    assert [(u["run_id"], f"{u['task_id']} try {u['try_number']}", u["why"])
            for u in version["uses"]] == uses
    index = client.get("/", headers=HTML).text
    runs = len({u[0] for u in uses})
    badge = f'href="/versions/{quote(ref, safe=":@")}#reuse">reused by {runs} run'
    assert (badge in index) == bool(uses), badge


def test_version_page_shows_its_cache_key_and_what_went_into_it(
        client: Any, filled: tuple[Path, Any]) -> None:
    made = filled[1]
    net1, net2, data = made["ournet1"], made["ournet2"], made["data2"]
    html = client.get("/versions/stylegan2-trained-network:v2", headers=HTML).text
    reuse = section(html, '<div class="reuse" id="reuse">', "</div>")
    key = key_of(net2)
    assert f'<code title="{key}">{key[:12]}</code>' in reuse
    assert "<code>train</code>" in reuse
    assert ("<code>--data &lt;run&gt;/dataset --config small --total-kimg 8</code>"
            in section(reuse, '<td class="cache-args">', "</td>"))
    inputs = section(reuse, '<td class="cache-inputs">', "</td>")
    assert f'href="/versions/{quote(pinned(data), safe=":@")}"' in inputs
    assert ">lsun-cat-256:v2</a>" in inputs
    assert f"<code>{CODE}</code>" in section(reuse, '<td class="cache-code">', "</td>")
    assert net2.lineage.cache is not None
    ckey = net2.lineage.cache["continue_key"]
    assert net1.lineage.cache is not None  # v1: the same key but for the training length
    assert ckey == net1.lineage.cache["continue_key"] and ckey not in (key, key_of(net1))
    assert f'<code title="{ckey}">{ckey[:12]}</code>' in reuse
    continued = section(reuse, '<td id="continued-from">', "</td>")
    assert f'href="/versions/{quote(pinned(net1), safe=":@")}"' in continued
    assert plain(continued) == ("stylegan2-trained-network:v1 "
                                "(stylegan2-trained-network:v1, 4 kimg)")
    api = client.get("/api/versions/stylegan2-trained-network:v2").json()
    assert api["cache"]["key"] == key and api["cache"]["stage"] == "train"
    assert [i["label"] for i in api["cache"]["inputs"]] == ["lsun-cat-256:v2"]
    assert api["continued"]["link"] == pinned(net1)
    # a version made before keys were recorded says so, and continues from nothing
    old = client.get("/versions/lsun-cat-256:v1", headers=HTML).text
    assert "none recorded (made by a task that computes none" in old
    assert 'id="continued-from"' not in old
    assert client.get("/api/versions/lsun-cat-256:v1").json()["cache"] is None


@pytest.mark.parametrize("cache", [
    pytest.param({}, id="no-parts"),
    pytest.param({"parts": "not an object"}, id="parts-a-string"),
    pytest.param({"parts": {"args": "--one --string", "inputs": "lsun@nothex", "code": {"a": 1},
                            "stage": 7}}, id="parts-of-odd-types"),
    pytest.param({"parts": {"args": [1, None, ["x"]], "inputs": [5, "bad ref"]},
                  "continue_key": ["not", "a", "key"]}, id="odd-lists"),
])
def test_odd_cache_parts_are_shown_as_recorded_not_fatal(tmp_path: Path,
                                                         cache: dict[str, Any]) -> None:
    """Only the key of a lineage's cache record is checked on reading: whatever else a
    foreign or older writer put there is shown as text, never a 500."""
    from fastapi.testclient import TestClient
    from stylegan_airflow.ui import create_app
    from stylegan_airflow.ui.auth import require_user

    from stylegan_ops.store.local import Store
    from stylegan_ops.store.model import Lineage

    key = "7" * 64
    Store(tmp_path / "store").snapshot(
        tree(tmp_path / "src", {"dataset.json": {"count": 1}}), "odd", (),
        Lineage(dag_id="d", run_id="r", cache={"key": key, **cache},
                continued_from="odd@zzzz not a ref"))
    app = create_app(tmp_path / "store")
    app.dependency_overrides[require_user] = lambda: "tester"
    c = TestClient(app)
    res = c.get("/versions/odd:v1", headers=HTML)
    assert res.status_code == 200 and f'<code title="{key}">{key[:12]}</code>' in res.text
    assert plain(section(res.text, '<td id="continued-from">', "</td>")) == "odd@zzzz not a ref"
    assert c.get("/api/versions/odd:v1").json()["cache"]["key"] == key


def test_run_page_lists_what_the_run_committed(client: Any) -> None:
    html = client.get(f"/runs/stylegan2_train/{TRAIN_RUN}", headers=HTML).text
    for name in NAMES[1:]:
        assert f">{name}" in html or name in html
    assert 'data-ref="lsun-cat-256:' not in html  # the prepare run's, not this one's
    api = client.get(f"/api/runs/stylegan2_prepare/{quote(PREPARE_RUN, safe='')}").json()
    assert [v["number"] for v in api["versions"]] == [2, 1]


def test_api_versions_has_lineage_links_and_tags(client: Any) -> None:
    data = client.get("/api/versions").json()
    by_name = {n["name"]: n for n in data["names"]}
    assert set(by_name) == set(NAMES)
    data_v1 = by_name["lsun-cat-256"]["versions"][-1]
    assert data_v1["tags"] == ["demo"] and data_v1["kind"] == "dataset"
    assert data_v1["run_url"].startswith("/dags/stylegan2_prepare/runs/manual__2026")
    one = client.get("/api/versions/stylegan2-generated-ours:v1").json()
    assert one["generation"] == {"network": one["lineage"]["inputs"][0],
                                 "truncation_psi": 0.5, "seeds": [6600, 6601, 6602]}
    assert one["manifest"]["files"][0]["path"] == "generate.json"


def test_metrics_table_and_plots_compare_pretrained_and_ours(client: Any) -> None:
    data = client.get("/api/metrics").json()
    rows = {(r["series"], r["number"]): r["results"] for r in data["rows"]}
    assert rows[("pretrained", 1)] == {"fid50k": 6.93, "swd32": 3.0, "swd_avg": 2.5}
    # the last record of a metric file wins (a re-evaluation appends)
    assert rows[("ours", 2)] == {"fid50k@stand-in": 80.25, "swd32": 7.5, "swd_avg": 6.5}
    assert data["stand_in"] is True
    html = client.get("/metrics", headers=HTML).text
    assert 'id="metrics"' in html and "80.2500" in html and "6.9300" in html
    charts = re.findall(r"<svg class=\"chart\".*?</svg>", html, re.S)
    assert len(charts) == len(data["keys"]) == 4
    standin = next(c for c in charts if "fid50k@stand-in" in c)
    assert "STAND-IN, not a standard score" in standin
    swd = next(c for c in charts if 'aria-label="swd32"' in c)
    assert swd.count("<circle") == 3 and "pretrained" in swd and "ours" in swd
    assert "STAND-IN metrics present" in html


def test_images_page_shows_reals_progress_and_seeds_with_their_network(
        client: Any, filled: tuple[Path, Any]) -> None:
    made = filled[1]
    html = client.get("/images", headers=HTML).text
    thumbs = re.findall(r'<img src="(/thumbs/[^"]+)"', html)
    net2 = pinned(made["ournet2"])
    progress = [t for t in thumbs if net2 in unquote(t)]
    # in kimg order (NVIDIA's fakes000004.png before our fakes000004.512.png), large
    assert [t.rsplit("/", 1)[-1] for t in progress] == [
        "reals.png", *[grid for grid, _ in TRAINED_GRIDS]]
    assert all(t.startswith("/thumbs/512/") for t in progress)
    assert "fakes at 8 kimg" in html and "fakes at 4.512 kimg" in html
    gen = pinned(made["gen_ours2"])  # the newest generated images: the seeds-only rerun's
    assert [t.rsplit("/", 1)[-1] for t in thumbs if gen in unquote(t)] == [
        "seed6603.png", "seed6604.png", "seed6605.png"]
    assert "ψ = <strong>0.5</strong>" in html and f"/versions/{net2}" in hrefs(html)
    chosen = client.get("/images?generated=stylegan2-generated-pretrained:v1&run="
                        "stylegan2-trained-network:v1", headers=HTML).text
    assert pinned(made["gen_pre"]) in unquote(chosen)
    assert "fakes000008" not in chosen and "fakes000004" in chosen


def test_compare_shows_metrics_lineage_diff_and_images_side_by_side(client: Any) -> None:
    data = client.get("/api/compare", params={"a": "stylegan2-evaluation-ours:v1",
                                              "b": "stylegan2-evaluation-ours:v2"}).json()
    fid = next(m for m in data["metrics"] if m["key"] == "fid50k@stand-in")
    assert (fid["a"], fid["b"], fid["delta"], fid["stand_in"]) == (95.5, 80.25, -15.25, True)
    params = {d["key"]: d for d in data["params"]}
    assert params["total_kimg"] == {"key": "total_kimg", "a": 4, "b": 8, "differs": True}
    inputs = next(d for d in data["lineage"] if d["key"] == "inputs")
    assert inputs["differs"] and data["files"]["changed"] == sorted(
        ["metric-fid50k@stand-in.jsonl", "metric-swd.jsonl"])
    html = client.get("/compare?a=stylegan2-trained-network:v1&b=stylegan2-trained-network:v2",
                      headers=HTML).text
    assert 'id="compare-images"' in html and "not in A" in html  # fakes000008 is new in v2
    row = re.search(r"<tr><th>fakes000004.png</th>(.*?)</tr>", html, re.S)
    assert row is not None and row.group(1).count("<img") == 2
    assert 'class="differs"' in html
    assert "<select name=\"a\">" in client.get("/compare", headers=HTML).text


@pytest.mark.airflow
def test_graph_page_inlines_the_coloured_svg(client: Any) -> None:
    html = client.get("/graph/stylegan2_prepare", headers=HTML).text
    assert "<svg" in html and "fn_versioning" in html and "data preparation" in html
    dot = client.get("/graph/stylegan2_watch_repo/graph.dot")
    assert dot.status_code == 200 and dot.text.startswith('digraph "stylegan2_watch_repo"')
    svg = client.get("/graph/stylegan2_watch_repo/graph.svg")
    assert svg.headers["content-type"] == "image/svg+xml" and "<svg" in svg.text


@pytest.mark.parametrize(("url", "message"), [
    pytest.param("/versions/no-such-name", "unknown version name", id="unknown-name"),
    pytest.param("/versions/lsun-cat-256:v9", "unknown version", id="unknown-number"),
    pytest.param("/versions/lsun-cat-256:nope", "unknown tag", id="unknown-tag"),
    pytest.param("/versions/lsun-cat-256@ffffffff", "unknown version id", id="unknown-id"),
    pytest.param("/names/no-such-name", "unknown version name", id="unknown-name-list"),
    pytest.param("/files/lsun-cat-256:v1/missing.png", "has no file", id="unknown-file"),
    pytest.param("/thumbs/256/lsun-cat-256:v1/missing.png", "has no file", id="unknown-thumb"),
    pytest.param("/compare?a=lsun-cat-256:v1&b=lsun-cat-256:v7", "unknown version",
                 id="compare-unknown"),
    pytest.param("/images?generated=stylegan2-generated-ours:v5", "unknown version",
                 id="images-unknown"),
    pytest.param("/graph/no_such_dag", "unknown DAG", id="unknown-dag"),
])
def test_unknown_things_are_404_with_a_message(client: Any, url: str, message: str) -> None:
    html = client.get(url, headers=HTML)
    assert html.status_code == 404 and message in html.text
    assert "<h1>Not found" in html.text
    api = client.get(url)  # a non-browser client gets the message as JSON
    assert api.status_code == 404 and message in api.json()["detail"]


def test_an_empty_or_missing_store_says_how_to_fill_it(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from stylegan_airflow.ui import create_app
    from stylegan_airflow.ui.auth import require_user

    app = create_app(tmp_path / "nothing-here")
    app.dependency_overrides[require_user] = lambda: "tester"
    c = TestClient(app)
    res = c.get("/", headers=HTML)
    assert res.status_code == 200 and "No version store at" in res.text
    assert not (tmp_path / "nothing-here").exists()  # the page never writes to the store
    assert c.get("/api/metrics").json()["rows"] == []


def test_a_damaged_version_is_flagged_not_fatal(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from stylegan_airflow.ui import create_app
    from stylegan_airflow.ui.auth import require_user

    from tests.ui.storefill import fill

    made = fill(tmp_path / "store", tmp_path / "src")
    (tmp_path / "store" / "manifests" / f"{made['data1'].id}.json").unlink()
    app = create_app(tmp_path / "store")
    app.dependency_overrides[require_user] = lambda: "tester"
    c = TestClient(app)
    page = c.get("/", headers=HTML)
    assert page.status_code == 200 and ">damaged<" in page.text
    assert 'data-name="stylegan2-generated-ours"' in page.text  # the rest is still shown
    one = c.get("/versions/lsun-cat-256:v1", headers=HTML)
    assert one.status_code == 200 and "store verify" in one.text


def test_pages_may_only_be_framed_by_airflow_and_run_no_scripts(client: Any) -> None:
    res = client.get("/", headers=HTML)
    csp = res.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in csp and "script-src 'none'" in csp
    assert "<script" not in res.text
