"""The DAG run's "StyleGAN2 versions" tab, compare defaults and the workflow-graph index.

Rendered pages are read as HTML from the app; where layout matters (wrapping, row height)
a real headless Chromium measures the page the app serves on 127.0.0.1.
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest

from stylegan_ops.store.local import Store
from stylegan_ops.store.model import Version
from tests.ui.browser import (
    LOADED_IMAGES,
    OVERFLOW,
    RUN_ROWS,
    artifacts,
    chromium,
    served,
    tall_or_broken,
    wait_for,
)
from tests.ui.conftest import HTML
from tests.ui.storefill import (
    LATER_RUN,
    PREPARE_RUN,
    REUSE_COMMIT,
    REUSE_RUN,
    TRAIN_RUN,
    fill,
    key_of,
    lineage,
    pinned,
    png,
    tree,
)

# A run id as Airflow writes a scheduled one, a task id past what a column shows, and an
# input pulled from elsewhere that this store does not hold.
EXTRA_RUN = "scheduled__2026-02-03T04:05:06.123456+00:00"
LONG_TASK = "commit_the_merged_dataset_of_every_shard_and_every_source"
FOREIGN = "lsun-cat-remote@" + "ab" * 32
TRAIN_ROWS = ["stylegan2-pretrained-network:v1", "stylegan2-trained-network:v2",
              "stylegan2-trained-network:v1", "stylegan2-evaluation-ours:v2",
              "stylegan2-evaluation-ours:v1", "stylegan2-evaluation-pretrained:v1",
              "stylegan2-generated-ours:v1", "stylegan2-generated-pretrained:v1"]
# the seeds-only rerun's tab: (ref, made or reused, the task of the rerun, why, the key)
REUSE_ROWS = [
    ("stylegan2-pretrained-network:v1", "reused", "commit_pretrained_network", "cache", "prenet"),
    ("stylegan2-trained-network:v2", "reused", "commit_trained_network", "cache", "ournet2"),
    ("stylegan2-evaluation-ours:v2", "reused", "commit_ours_evaluation", "cache", "eval_ours2"),
    ("stylegan2-evaluation-pretrained:v1", "reused", "commit_pretrained_evaluation", "cache",
     "eval_pre"),
    ("stylegan2-generated-ours:v2", "made", "commit_gen_ours", None, None),
    # generated again to the same bytes: before reuse was recorded, this row was missing
    ("stylegan2-generated-pretrained:v1", "reused", "commit_gen_pre", "same-content",
     "gen_pre"),
]
# where "last computed by" leads: that run's page, in the same frame (the Airflow UI's
# sandbox keeps a plugin frame from navigating the window around it)
TRAIN_PAGE = f"/runs/stylegan2_train/{quote(TRAIN_RUN, safe='')}"
# the width of the run tab's frame inside the Airflow UI in a 1400 px wide window
FRAME_WIDTH = 1030


def app_over(root: Path) -> Any:
    from stylegan_airflow.ui import create_app
    from stylegan_airflow.ui.auth import require_user

    app = create_app(root)
    app.dependency_overrides[require_user] = lambda: "tester"
    return app


@pytest.fixture(scope="module")
def extra(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Version]]:
    """The filled store plus a version with four inputs (one foreign) and a long task id."""
    base = tmp_path_factory.mktemp("run-tab")
    made = fill(base / "store", base / "work")
    inputs = (pinned(made["data1"]), pinned(made["data2"]), pinned(made["ournet2"]), FOREIGN)
    source = tree(base / "work" / "merged", {
        "dataset.json": {"count": 48}, "reals.png": png(64, 32, (10, 200, 10)),
        "lsun-cat-merged-r02.tfrecords": b"r02"})
    made["merged"], _ = Store(base / "store").snapshot(
        source, "lsun-cat-merged", (), lineage("stylegan2_prepare", EXTRA_RUN, LONG_TASK, inputs))
    return base / "store", made


@pytest.fixture
def extra_client(extra: tuple[Path, Any], tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    monkeypatch.setenv("STYLEGAN_CACHE", str(tmp_path / "cache"))
    with TestClient(app_over(extra[0])) as c:
        yield c


def text(fragment: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed."""
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def run_tab(client: Any, dag_id: str, run_id: str) -> dict[str, dict[str, str]]:
    """Row ref → cell class → cell HTML, rows in page order."""
    res = client.get(f"/runs/{dag_id}/{quote(run_id, safe='')}", headers=HTML)
    assert res.status_code == 200, res.text
    rows = {}
    for ref, body in re.findall(r'<tr data-ref="([^"]+)"[^>]*>(.*?)</tr>', res.text, re.S):
        rows[ref] = {m.group(1).split()[0]: m.group(2) for m in
                     re.finditer(r'<td class="([^"]+)">(.*?)</td>', body, re.S)}
    return rows


def links(cell: str) -> list[tuple[str, str, str]]:
    """(text, unquoted href, title) of each link in a cell."""
    return [(text(t), unquote(h), htmllib.unescape(title)) for h, title, t in
            re.findall(r'<a class="ref" href="([^"]+)" title="([^"]*)">(.*?)</a>', cell, re.S)]


# --- what each row says -----------------------------------------------------------------

@pytest.mark.parametrize(("dag_id", "run_id", "refs"), [
    pytest.param("stylegan2_train", TRAIN_RUN, TRAIN_ROWS, id="train"),
    pytest.param("stylegan2_prepare", PREPARE_RUN, ["lsun-cat-256:v2", "lsun-cat-256:v1"],
                 id="prepare"),
    pytest.param("stylegan2_prepare", EXTRA_RUN, ["lsun-cat-merged:v1"], id="scheduled"),
])
def test_every_row_names_its_output_as_name_and_number(
        extra_client: Any, dag_id: str, run_id: str, refs: list[str]) -> None:
    rows = run_tab(extra_client, dag_id, run_id)
    assert list(rows) == refs  # pipeline order, newest first within a name
    for ref, cells in rows.items():
        name = ref.split(":")[0]
        assert links(cells["output"])[0] == (ref, f"/versions/{ref}", ref)
        assert not re.search(r">v\d+<", cells["output"])  # never a bare number
        assert name in cells["output"]


@pytest.mark.parametrize(("dag_id", "run_id", "ref", "inputs"), [
    pytest.param("stylegan2_train", TRAIN_RUN, "stylegan2-evaluation-ours:v2",
                 [("stylegan2-trained-network:v2", "ournet2"), ("lsun-cat-256:v2", "data2")],
                 id="evaluation"),
    pytest.param("stylegan2_train", TRAIN_RUN, "stylegan2-generated-pretrained:v1",
                 [("stylegan2-pretrained-network:v1", "prenet")], id="generated"),
    pytest.param("stylegan2_prepare", EXTRA_RUN, "lsun-cat-merged:v1",
                 [("lsun-cat-256:v1", "data1"), ("lsun-cat-256:v2", "data2"),
                  ("stylegan2-trained-network:v2", "ournet2")], id="several"),
])
def test_inputs_are_name_and_number_links_to_the_pinned_version(
        extra_client: Any, extra: tuple[Path, Any], dag_id: str, run_id: str, ref: str,
        inputs: list[tuple[str, str]]) -> None:
    made = extra[1]
    cell = run_tab(extra_client, dag_id, run_id)[ref]["inputs"]
    expected = [(label, f"/versions/{pinned(made[key])}", pinned(made[key]))
                for label, key in inputs]
    assert links(cell) == expected
    assert not re.search(r"[0-9a-f]{13}", text(cell).replace(FOREIGN, ""))  # no raw ids
    for label, href, _ in expected:  # each one opens the version it names
        page = extra_client.get(href, headers=HTML).text
        name, number = label.split(":")
        assert re.search(rf"<h1>{name} <span class=\"vnum\">{number}</span>", page), label


def test_an_input_this_store_lacks_is_shown_short_with_the_whole_ref(extra_client: Any
                                                                     ) -> None:
    cell = run_tab(extra_client, "stylegan2_prepare", EXTRA_RUN)["lsun-cat-merged:v1"]["inputs"]
    assert f'<span title="{FOREIGN} (not in this store)">{FOREIGN[:len("lsun-cat-remote@") + 10]}' \
           "</span>" in cell
    assert f"/versions/{FOREIGN}" not in cell  # no link to a 404


def test_long_ids_are_cut_with_the_whole_value_in_a_title(extra_client: Any,
                                                          extra: tuple[Path, Any]) -> None:
    version = extra[1]["merged"]
    cells = run_tab(extra_client, "stylegan2_prepare", EXTRA_RUN)["lsun-cat-merged:v1"]
    assert f'<span title="{LONG_TASK}">{LONG_TASK[:31]}…</span>' in cells["task"]
    assert f'title="version id {version.id}">{version.id[:12]}<' in cells["output"]
    index = extra_client.get("/", headers=HTML).text  # the run id in the versions tables
    assert f'title="open the DAG run {EXTRA_RUN} in Airflow"' in index
    assert f"<small>{EXTRA_RUN[:27]}…</small>" in index


@pytest.mark.parametrize(("ref", "numbers", "results"), [
    pytest.param("stylegan2-evaluation-ours:v2", "fid50k STAND-IN = 80.25 swd32 = 7.5 "
                 "swd_avg = 6.5", {"fid50k@stand-in": 80.25, "swd32": 7.5, "swd_avg": 6.5},
                 id="ours-v2"),
    pytest.param("stylegan2-evaluation-ours:v1", "fid50k STAND-IN = 95.5 swd32 = 9 "
                 "swd_avg = 8", {"fid50k@stand-in": 95.5, "swd32": 9.0, "swd_avg": 8.0},
                 id="ours-v1"),
    pytest.param("stylegan2-evaluation-pretrained:v1", "fid50k = 6.93 swd32 = 3 swd_avg = 2.5",
                 {"fid50k": 6.93, "swd32": 3.0, "swd_avg": 2.5}, id="pretrained"),
])
def test_evaluation_rows_show_their_numbers(client: Any, ref: str, numbers: str,
                                            results: dict[str, float]) -> None:
    cells = run_tab(client, "stylegan2_train", TRAIN_RUN)
    assert text(cells[ref]["preview"]) == numbers
    api = client.get(f"/api/runs/stylegan2_train/{TRAIN_RUN}").json()["versions"]
    assert next(v for v in api if v["ref"] == ref)["results"] == results


# --- made or reused ---------------------------------------------------------------------

def origins(client: Any, dag_id: str, run_id: str) -> list[tuple[str, str]]:
    """(ref, data-origin) of each row of a run's tab, in page order."""
    html = client.get(f"/runs/{dag_id}/{quote(run_id, safe='')}", headers=HTML).text
    return re.findall(r'<tr data-ref="([^"]+)" data-origin="([^"]+)">', html)


@pytest.mark.parametrize(("run_id", "rows"), [
    pytest.param(REUSE_RUN, [(r[0], r[1]) for r in REUSE_ROWS], id="seeds-only-rerun"),
    pytest.param(LATER_RUN, [("stylegan2-trained-network:v2", "reused")], id="reused-only"),
    pytest.param(TRAIN_RUN, [(ref, "made") for ref in TRAIN_ROWS], id="made-only"),
])
def test_a_runs_tab_lists_what_it_made_and_what_it_reused(client: Any, run_id: str,
                                                          rows: list[tuple[str, str]]) -> None:
    """One row per version, the retried commit's second use record included; a run's own
    versions are made, whatever later runs did with them."""
    assert origins(client, "stylegan2_train", run_id) == rows
    api = client.get(f"/api/runs/stylegan2_train/{quote(run_id, safe='')}").json()
    assert [(v["ref"], v["origin"]) for v in api["versions"]] == rows
    assert api["skipped"] == {}


@pytest.mark.parametrize(("ref", "origin", "task", "reason", "key"),
                         [pytest.param(*r, id=r[0].split(":")[0][10:] or r[0]) for r in REUSE_ROWS])
def test_each_reused_row_says_it_was_reused_and_links_the_run_that_computed_it(
        client: Any, filled: tuple[Path, Any], ref: str, origin: str, task: str,
        reason: str | None, key: str | None) -> None:
    made = filled[1]
    cells = run_tab(client, "stylegan2_train", REUSE_RUN)[ref]
    shown = text(cells["task"])
    api = next(v for v in client.get(f"/api/runs/stylegan2_train/{quote(REUSE_RUN, safe='')}"
                                     ).json()["versions"] if v["ref"] == ref)
    if origin == "made":
        assert shown.startswith(f"{task} made try 1 · ") and shown.endswith(" UTC")
        assert api["reused"] is None and api["lineage"]["run_id"] == REUSE_RUN
        return
    assert key is not None
    # the task of this run that reused it, then the mark and the run that computed it
    assert shown == f"{task} reused last computed by 0123456789a…"
    link = re.search(r'<a class="run" href="([^"]+)" title="([^"]+)">', cells["task"])
    assert link is not None and (htmllib.unescape(link.group(1)), htmllib.unescape(
        link.group(2))) == (TRAIN_PAGE, f"stylegan2_train / {TRAIN_RUN}: the versions it "
                                        "made or reused")
    why = {"cache": "cache hit", "same-content": "same content"}[str(reason)]
    assert f'title="reused ({why}) by try 1 at ' in cells["task"]
    assert api["reused"]["reason"] == reason and api["reused"]["key"] == key_of(made[key])
    assert api["reused"]["made_by"] == {"dag_id": "stylegan2_train", "run_id": TRAIN_RUN,
                                        "url": TRAIN_PAGE}
    assert (api["reused"]["task_id"], api["reused"]["try_number"]) == (task, 1)
    assert api["lineage"]["run_id"] == TRAIN_RUN  # the version itself is unchanged


def test_a_rerun_names_its_own_commit_and_counts_made_and_reused(client: Any) -> None:
    html = client.get(f"/runs/stylegan2_train/{quote(REUSE_RUN, safe='')}", headers=HTML).text
    assert "Versions made or reused by" in html
    assert f'<code title="{REUSE_COMMIT}">{REUSE_COMMIT[:12]}</code>' in html
    assert TRAIN_RUN.removeprefix("commit__")[:12] not in re.sub(r"<[^>]+>", "", html.split(
        "<table", 1)[0])  # the commit of the reused versions' run is not this run's
    counts = re.search(r'<p class="muted small" id="run-origin">(.*?)</p>', html)
    assert counts is not None and text(counts.group(1)) == (
        "1 made by this run, 5 reused from earlier runs (same cache key, or the same content "
        "made again).")


def test_other_rows_show_a_preview_not_numbers(client: Any) -> None:
    for ref, cells in run_tab(client, "stylegan2_train", TRAIN_RUN).items():
        if "-evaluation-" in ref:
            continue
        assert "metrics-inline" not in cells["preview"], ref
        if ref != "stylegan2-pretrained-network:v1":  # an imported network has no pictures
            assert '<img src="/thumbs/128/' in cells["preview"], ref


# --- compare defaults -------------------------------------------------------------------

def selected(html: str, select: str) -> list[str]:
    """The values of the selected options of ``<select name=select>``."""
    body = re.search(rf'<select name="{select}">(.*?)</select>', html, re.S)
    assert body is not None, select
    return re.findall(r'<option value="([^"]+)" selected>', body.group(1))


def summary(html: str) -> tuple[str, str]:
    """The (A, B) refs the comparison shows."""
    found = re.search(r'<th>A: <a class="ref"[^>]*>([^<]+)</a></th><th>B: <a class="ref"'
                      r'[^>]*>([^<]+)</a></th>', html)
    assert found is not None, "no comparison on the page"
    return found.group(1), found.group(2)


def test_compare_opens_with_the_newest_version_and_its_predecessor(client: Any) -> None:
    html = client.get("/compare", headers=HTML).text
    a, b = summary(html)
    assert (selected(html, "a"), selected(html, "b")) == ([a], [b])
    assert 'id="compare-default"' in html and 'id="compare-lineage"' in html
    names = {n["name"]: n["versions"] for n in client.get("/api/versions").json()["names"]}
    name, number = b.split(":v")
    assert a == f"{name}:v{int(number) - 1}"
    assert names[name][0]["ref"] == b  # the newest of its name
    assert all(versions[0]["created"] <= names[name][0]["created"]
               for versions in names.values() if len(versions) > 1)


@pytest.mark.parametrize(("query", "pair"), [
    pytest.param("b=stylegan2-evaluation-ours:v2",
                 ("stylegan2-evaluation-ours:v1", "stylegan2-evaluation-ours:v2"), id="only-b"),
    pytest.param("a=stylegan2-trained-network:v2",
                 ("stylegan2-trained-network:v1", "stylegan2-trained-network:v2"), id="only-a"),
    pytest.param("a=lsun-cat-256:v1&b=stylegan2-trained-network:v2",
                 ("lsun-cat-256:v1", "stylegan2-trained-network:v2"), id="both-kept"),
])
def test_one_chosen_version_is_compared_with_its_predecessor(client: Any, query: str,
                                                             pair: tuple[str, str]) -> None:
    html = client.get(f"/compare?{query}", headers=HTML).text
    assert summary(html) == pair
    assert 'id="compare-default"' not in html


def test_a_first_version_alone_asks_for_another(client: Any) -> None:
    html = client.get("/compare?a=lsun-cat-256:v1", headers=HTML).text
    assert "lsun-cat-256:v1 is the first version of its name" in html
    assert selected(html, "b") == ["lsun-cat-256:v1"] and 'id="summary"' not in html


def test_compare_says_when_there_is_nothing_to_compare(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    store = Store(tmp_path / "store")
    store.snapshot(tree(tmp_path / "one", {"dataset.json": {"count": 1}}), "only-one")
    html = TestClient(app_over(tmp_path / "store")).get("/compare", headers=HTML).text
    assert "Nothing to compare yet: no name has two versions" in html
    assert 'id="summary"' not in html


@pytest.mark.parametrize(("ref", "default"), [
    pytest.param("stylegan2-evaluation-ours:v2", "stylegan2-evaluation-ours:v1", id="previous"),
    pytest.param("lsun-cat-256:v1", "lsun-cat-256:v2", id="first-takes-next"),
    pytest.param("stylegan2-pretrained-network:v1", None, id="only-version"),
])
def test_a_version_page_compares_with_its_previous_version_by_default(
        client: Any, ref: str, default: str | None) -> None:
    html = client.get(f"/versions/{ref}", headers=HTML).text
    form = re.search(r'<section class="compare-form">(.*?)</section>', html, re.S)
    assert form is not None
    assert selected(form.group(1), "a") == ([default] if default else [])
    assert f'<input type="hidden" name="b" value="{ref}">' in form.group(1)
    if default:  # what submitting the form as it opens shows
        shown = client.get("/compare", params={"a": default, "b": ref}, headers=HTML).text
        assert summary(shown) == (default, ref)


# --- the workflow-graph index -----------------------------------------------------------

GRAPH_DAGS = ("stylegan2_prepare", "stylegan2_train", "stylegan2_watch_repo")


def graph_sections(html: str) -> dict[str, str]:
    return dict(re.findall(r'<section class="graph-box" id="graph-[^"]+" data-dag="([^"]+)">'
                           r"(.*?)</section>", html, re.S))


@pytest.mark.airflow
def test_the_graph_index_draws_every_dag_inline(client: Any) -> None:
    html = client.get("/graph", headers=HTML).text
    sections = graph_sections(html)
    assert tuple(sections) == GRAPH_DAGS
    for dag_id, body in sections.items():
        assert body.count("<svg") == 1 and "<?xml" not in body, dag_id
        single = client.get(f"/graph/{dag_id}", headers=HTML).text
        assert body.count('class="node fn_') == single.count('class="node fn_') > 2, dag_id
        assert f'href="/graph/{dag_id}/graph.dot"' in body
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "element ids repeat across the inlined graphs"


@pytest.mark.airflow
def test_the_graph_pages_say_when_graphviz_is_missing(client: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from stylegan_airflow import graph

    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no `dot` on it
    graph.to_svg.cache_clear()  # drawings made while `dot` was there would hide its absence
    res = client.get("/graph", headers=HTML)
    assert res.status_code == 200
    sections = graph_sections(res.text)
    assert tuple(sections) == GRAPH_DAGS
    for dag_id, body in sections.items():
        assert f"Cannot draw {dag_id}: Graphviz `dot` not found on PATH" in text(body)
        assert "<svg" not in body and f'href="/graph/{dag_id}/graph.dot"' in body
    one = client.get("/graph/stylegan2_prepare", headers=HTML)
    assert one.status_code == 200 and "apt-get install graphviz" in one.text
    assert client.get("/graph/stylegan2_prepare/graph.dot").status_code == 200


# --- layout, measured in Chromium -------------------------------------------------------

@pytest.mark.browser
def test_run_tab_rows_stay_about_two_lines_high_in_chromium(
        extra: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from selenium.webdriver.common.by import By

    monkeypatch.setenv("STYLEGAN_CACHE", str(tmp_path / "cache"))
    with served(app_over(extra[0])) as url, chromium(FRAME_WIDTH, 900) as browser:
        browser.get(f"{url}/runs/stylegan2_train/{quote(TRAIN_RUN, safe='')}")
        rows = wait_for(lambda: browser.execute_script(RUN_ROWS), "the run tab's rows")
        assert [r["ref"] for r in rows] == TRAIN_ROWS
        assert tall_or_broken(rows) == []
        assert browser.execute_script(OVERFLOW) <= 0  # nothing hides to the right
        assert wait_for(lambda: browser.execute_script(LOADED_IMAGES) == 4, "the previews")
        browser.save_screenshot(str(artifacts() / f"stylegan-run-tab-{FRAME_WIDTH}px.png"))

        # four inputs wrap between refs, never inside one, and the table still fits
        browser.get(f"{url}/runs/stylegan2_prepare/{quote(EXTRA_RUN, safe='')}")
        rows = wait_for(lambda: browser.execute_script(RUN_ROWS), "the scheduled run's row")
        assert tall_or_broken(rows, lines=None) == []
        inputs = browser.find_elements(By.CSS_SELECTOR, "td.inputs .input")
        assert [i.text for i in inputs][:3] == [
            "lsun-cat-256:v1", "lsun-cat-256:v2", "stylegan2-trained-network:v2"]
        assert browser.execute_script(OVERFLOW) <= 0
        browser.save_screenshot(str(artifacts() / "stylegan-run-tab-inputs.png"))


# each row's mark as the browser shows it: its text, colour, and the link to the run that
# computed a reused version (resolved by the browser, with where it opens)
MARKS = """
return Array.from(document.querySelectorAll('table.run-versions tbody tr')).map(tr => {
  const mark = tr.querySelector('td.task .origin-mark');
  const link = tr.querySelector('td.task a.run');
  return {ref: tr.dataset.ref, text: tr.querySelector('td.task small').innerText,
          mark: mark.innerText, colour: getComputedStyle(mark).backgroundColor,
          shown: mark.getBoundingClientRect().width > 0,
          href: link && link.href, target: link && link.target};
});
"""


@pytest.mark.browser
def test_the_rerun_tab_marks_reused_rows_in_chromium(
        filled: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from selenium.webdriver.common.by import By

    monkeypatch.setenv("STYLEGAN_CACHE", str(tmp_path / "cache"))
    with served(app_over(filled[0])) as url, chromium(FRAME_WIDTH, 900) as browser:
        browser.get(f"{url}/runs/stylegan2_train/{quote(REUSE_RUN, safe='')}")
        rows = wait_for(lambda: browser.execute_script(RUN_ROWS), "the rerun's rows")
        assert [r["ref"] for r in rows] == [r[0] for r in REUSE_ROWS]
        assert tall_or_broken(rows) == []  # the mark fits in the two lines a row has
        assert browser.execute_script(OVERFLOW) <= 0
        marks = browser.execute_script(MARKS)
        assert [(m["ref"], m["mark"]) for m in marks] == [
            (r[0], r[1].upper()) for r in REUSE_ROWS]
        assert all(m["shown"] for m in marks)
        assert len({m["colour"] for m in marks}) == 2  # made and reused look different
        for m in marks:
            if m["mark"] == "REUSED":
                assert m["text"] == "REUSED last computed by 0123456789a…", m
                assert (m["href"], m["target"]) == (url + TRAIN_PAGE, ""), m
            else:
                assert m["href"] is None and m["text"].startswith("MADE try 1 · "), m
        browser.save_screenshot(str(artifacts() / "stylegan-run-tab-reused.png"))

        # the reused network's own page: who computed it, and every run that reused it
        browser.find_element(
            By.CSS_SELECTOR, 'tr[data-ref="stylegan2-trained-network:v2"] a.ref').click()
        uses = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "table#uses tbody tr"),
                        "the version's uses")
        assert [u.get_attribute("data-run") for u in uses] == [LATER_RUN, REUSE_RUN, REUSE_RUN]
        computed = browser.find_element(By.ID, "computed-by")
        assert computed.text.startswith(f"run {TRAIN_RUN} (stylegan2_train, task "
                                        "commit_trained_network, ")
        assert computed.find_element(By.TAG_NAME, "a").get_attribute("href") == url + TRAIN_PAGE
        browser.save_screenshot(str(artifacts() / "stylegan-version-reuse.png"))

        # and the run that computed it is one click away
        computed.find_element(By.TAG_NAME, "a").click()
        rows = wait_for(lambda: browser.execute_script(RUN_ROWS), "the computing run's rows")
        assert [r["ref"] for r in rows] == TRAIN_ROWS
