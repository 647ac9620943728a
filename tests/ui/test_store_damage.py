"""The page over a damaged store: one bad record, a half-made name or a broken cache never
turns a page into a 500 or the whole store into a 404, and an altered object is never
served as good."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.ui.conftest import HTML, ROOT
from tests.ui.storefill import PREPARE_RUN, REUSE_RUN, fill

PAGES = ["/", "/names/lsun-cat-256", "/versions/lsun-cat-256:v1", "/metrics", "/images",
         "/compare?a=lsun-cat-256:v1&b=stylegan2-trained-network:v2", "/api/versions",
         "/api/metrics", f"/runs/stylegan2_prepare/{quote(PREPARE_RUN, safe='')}",
         "/files/lsun-cat-256:v1/dataset.json", "/thumbs/128/lsun-cat-256:v1/reals.png",
         f"/runs/stylegan2_train/{quote(REUSE_RUN, safe='')}",
         f"/api/runs/stylegan2_train/{quote(REUSE_RUN, safe='')}",
         "/versions/stylegan2-trained-network:v2", "/api/versions/stylegan2-trained-network:v2"]
V2 = "names/lsun-cat-256/versions/000002.json"
USES = "names/stylegan2-trained-network/uses"  # the rerun's (tries 1 and 2), a later run's


def replace(path: Path, how: str) -> None:
    path.chmod(0o644)
    data = path.read_bytes()
    path.unlink()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "dir":
        path.mkdir()
    elif how == "symlink":
        path.symlink_to(path.parent / "nowhere")
    else:
        path.write_text('{"number": "2", "name": 7}')


def first_use(root: Path) -> Path:
    return sorted((root / USES).iterdir())[0]  # the rerun's try 1: try 2 still says it


def use_of_no_version(root: Path) -> None:
    """A well-formed record of a version that is not there (written by hand: the store
    refuses to record one)."""
    path = first_use(root)
    record = json.loads(path.read_text())
    (root / USES / "00000000000000000001-0000abcd.json").write_text(
        json.dumps({**record, "number": 9}))


def uses_a_file(root: Path) -> None:
    shutil.rmtree(root / USES)
    (root / USES).write_text("not a folder")


def caches(root: Path) -> None:
    for p in root.glob("state/*/*.json"):
        replace(p, "truncated")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "empty-versions-dir": lambda r: (r / "names/ghost/versions").mkdir(parents=True),
    "record-truncated": lambda r: replace(r / V2, "truncated"),
    "record-wrong-types": lambda r: replace(r / V2, "types"),
    "record-is-a-dir": lambda r: replace(r / V2, "dir"),
    "record-dangling-symlink": lambda r: replace(r / V2, "symlink"),
    "tag-truncated": lambda r: replace(r / "names/lsun-cat-256/tags/demo.json", "truncated"),
    "bad-name-dir": lambda r: (r / "names/Not A Name/versions").mkdir(parents=True),
    "caches-truncated": caches,
    "use-truncated": lambda r: replace(first_use(r), "truncated"),
    "use-wrong-types": lambda r: replace(first_use(r), "types"),
    "use-is-a-dir": lambda r: replace(first_use(r), "dir"),
    "use-stray-file": lambda r: (r / USES / "notes.txt").write_text("hello"),
    "use-of-no-version": use_of_no_version,
    "uses-a-file": uses_a_file,
}


@pytest.fixture
def app_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             airflow_db: Any) -> Iterator[Callable[[Path], Any]]:
    from fastapi.testclient import TestClient
    from stylegan_airflow.ui import create_app
    from stylegan_airflow.ui.auth import require_user

    monkeypatch.setenv("STYLEGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
    clients: list[Any] = []

    def make(root: Path) -> Any:
        app = create_app(root)
        app.dependency_overrides[require_user] = lambda: "tester"
        clients.append(TestClient(app).__enter__())
        return clients[-1]

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_store_never_answers_500_or_404s_whole(app_over: Callable[[Path], Any],
                                                          tmp_path: Path, damage: str) -> None:
    fill(tmp_path / "store", tmp_path / "work")
    DAMAGE[damage](tmp_path / "store")
    client = app_over(tmp_path / "store")
    for url in PAGES:
        res = client.get(url, headers=HTML if not url.startswith("/api") else {})
        assert res.status_code == 200, (url, res.status_code, res.text[:300])
    index = client.get("/", headers=HTML).text
    assert 'data-name="lsun-cat-256"' in index and 'data-name="ghost"' not in index
    if damage.startswith(("record", "tag", "bad-name", "use")):
        assert "damaged record" in index  # said, not hidden
        assert client.get("/api/versions").json()["skipped"]
    if damage.startswith("use"):  # the rerun's tab still lists what it could read, and says
        run = client.get(PAGES[-4], headers=HTML).text
        assert "damaged record" in run and f"<code>{USES}" in run
        reused = re.findall(r'<tr data-ref="([^"]+)" data-origin="reused">', run)
        expected = 4 if damage == "uses-a-file" else 5  # the retry's record stands in
        assert len(reused) == expected and ("stylegan2-trained-network:v2" in reused) == (
            damage != "uses-a-file")
        page = client.get("/versions/stylegan2-trained-network:v2", headers=HTML).text
        assert "damaged record" in page and 'id="uses"' in page
    if damage.startswith("record"):
        res = client.get("/versions/lsun-cat-256:v2", headers=HTML)
        assert res.status_code == 404 and "damaged records" in res.text


def test_an_altered_object_is_flagged_on_the_page_and_never_served(
        app_over: Callable[[Path], Any], tmp_path: Path) -> None:
    from stylegan_ops.store.local import Store

    made = fill(tmp_path / "store", tmp_path / "work")
    store = Store(tmp_path / "store")
    store.checkout("lsun-cat-256:v1", tmp_path / "co", mode="link")
    target = tmp_path / "co/dataset.json"
    st = target.stat()
    target.chmod(0o644)
    with target.open("r+b") as f:  # root writes through the hard link, puts mtime back
        f.write(b" ")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    client = app_over(tmp_path / "store")
    # not yet flagged: the page rehashes a small changed object before serving it
    res = client.get("/files/lsun-cat-256:v1/dataset.json")
    assert res.status_code == 409 and "damaged" in res.json()["detail"]
    # a use of the store flags it; from then on every page says so
    with pytest.raises(Exception, match="damaged"):
        store.checkout("lsun-cat-256:v1", tmp_path / "co2")
    page = client.get(f"/versions/{made['data1'].name}:v1", headers=HTML)
    assert page.status_code == 200 and "This version is damaged" in page.text
    assert "verify --repair" in page.text
    row = next(v for n in client.get("/api/versions").json()["names"] for v in n["versions"]
               if v["ref"] == "lsun-cat-256:v1")
    assert row["problem"] and "dataset.json" in row["problem"]
    res = client.get("/files/lsun-cat-256:v1/dataset.json")
    assert res.status_code == 409 and "verify --repair" in res.json()["detail"]
    assert client.get("/files/lsun-cat-256:v2/reals.png").status_code == 200
