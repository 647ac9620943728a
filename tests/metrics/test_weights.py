"""The weight cache and fetch-weights: pins, trust on first use of the official URL (a
loopback server posing as the official host through STYLEGAN_WEIGHTS_MIRROR), --from and
--url files, and damage caught on use."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stylegan_ops.errors import StageError
from stylegan_ops.metrics import detectors
from stylegan_ops.metrics.weights import MIRROR_ENV, locate, sha256_of
from tests.conftest import cli, cli_subprocess
from tests.httpserver import LoopbackServer, Plan
from tests.netfiles import inception_graph, vgg_pickle

TGZ_PATH = "/models/image/imagenet/inception-2015-12-05.tgz"  # the official URL's path


def inception_tgz(pb: Path) -> bytes:
    """The official archive's layout: the GraphDef under ./ among other files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("./LICENSE")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"terms"))
        tar.add(pb, arcname="./classify_image_graph_def.pb")
    return buf.getvalue()


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two different GraphDefs: the "official" one and another."""
    root = tmp_path_factory.mktemp("graphs")
    return {"official": inception_graph(root / "official.pb"),
            "other": inception_graph(root / "other.pb", seed=1)}


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STYLEGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture()
def official(graphs: dict[str, Path], cache: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    """A loopback server holding the official archive, configured as the mirror (with a
    path prefix, which the official path is appended to)."""
    plan = Plan(files={f"/mirror{TGZ_PATH}": inception_tgz(graphs["official"])})
    with LoopbackServer(plan) as srv:
        monkeypatch.setenv(MIRROR_ENV, f"{srv.url}/mirror/")
        yield srv


def installed(res: object) -> dict[str, object]:
    return json.loads(res.stdout.splitlines()[-1])["installed"][0]  # type: ignore[attr-defined]


def error_line(stderr: str) -> str:
    """The one error line; a traceback or a second error line fails the test."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("stylegan-ops: error:")]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    return errors[0]


def test_first_official_fetch_is_trusted_recorded_and_printed(
        graphs: dict[str, Path], cache: Path, official: LoopbackServer) -> None:
    digest = sha256_of(graphs["official"])
    res = cli_subprocess("fetch-weights", "inception")  # a real process, as a user runs it
    assert res.returncode == 0, res.stderr
    got = installed(res)
    assert got == {"name": "inception", "path": str(cache / "weights" /
                                                    "classify_image_graph_def.pb"),
                   "sha256": digest, "trust": "official", "first_use": True,
                   "source": f"{official.url}/mirror{TGZ_PATH}"}
    assert f"sha256 {digest} (trusted on first use, recorded in" in res.stderr
    record = json.loads((cache / "weights" / "weights.json").read_text())["inception"]
    assert record["official"]["sha256"] == digest and record["trust"] == "official"
    label = detectors.load("inception").label
    assert label == {"name": "inception", "file": "classify_image_graph_def.pb",
                     "sha256": digest, "standard": True}
    assert not list((cache / "weights" / ".downloads").iterdir())  # archive removed
    # a second fetch of the same file checks it against the record
    again = cli("fetch-weights", "inception")
    assert again.exit_code == 0, again.stderr
    assert installed(again)["first_use"] is False and installed(again)["trust"] == "official"
    assert f"sha256 {digest} (official)" in again.stderr


def test_fetch_all_takes_every_file_from_the_mirror(graphs: dict[str, Path], cache: Path,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    files = {TGZ_PATH: inception_tgz(graphs["official"])}
    for name in ("vgg16", "vgg16_zhang_perceptual"):
        kind = "lpips" if "zhang" in name else "vgg16"
        pkl = vgg_pickle(tmp_path / f"{name}.pkl", kind)
        files[f"/stylegan/networks/metrics/{name}.pkl"] = pkl.read_bytes()
    with LoopbackServer(Plan(files=files)) as srv:
        monkeypatch.setenv(MIRROR_ENV, srv.url)
        res = cli("fetch-weights", "all")
    assert res.exit_code == 0, res.stderr
    got = json.loads(res.stdout.splitlines()[-1])["installed"]
    assert [(g["name"], g["trust"], g["first_use"]) for g in got] == [
        ("inception", "official", True), ("vgg16", "official", True),
        ("lpips", "official", True)]
    assert res.stderr.count("(trusted on first use, recorded in") == 3
    assert all(locate(n).standard for n in ("inception", "vgg16", "lpips"))


def test_a_changed_official_file_is_refused_and_the_cache_kept(
        graphs: dict[str, Path], cache: Path, official: LoopbackServer) -> None:
    assert cli("fetch-weights", "inception").exit_code == 0
    pb = cache / "weights" / "classify_image_graph_def.pb"
    before = pb.read_bytes(), (cache / "weights" / "weights.json").read_bytes()
    official.plan.files[f"/mirror{TGZ_PATH}"] = inception_tgz(graphs["other"])
    first, changed = sha256_of(graphs["official"]), sha256_of(graphs["other"])
    res = cli_subprocess("fetch-weights", "inception")
    assert res.returncode == 2
    line = error_line(res.stderr)
    assert f"sha256 {changed}, not the {first} recorded on first use" in line
    assert "the cached file and record are unchanged" in line
    assert (pb.read_bytes(), (cache / "weights" / "weights.json").read_bytes()) == before
    assert locate("inception").sha256 == first
    assert not list((cache / "weights" / ".downloads").iterdir())  # refetched next time
    # the user who vouches for the new file re-pins it
    res2 = cli("fetch-weights", "inception", "--sha256", changed)
    assert res2.exit_code == 0, res2.stderr
    assert installed(res2)["trust"] == "user" and locate("inception").sha256 == changed
    assert cli("fetch-weights", "inception").exit_code == 0  # now the recorded one


@pytest.mark.parametrize(("which", "flags", "trust"), [
    pytest.param("official", (), "recorded", id="matches-the-official-record"),
    pytest.param("other", ("--sha256", "other"), "user", id="matches-the-users-sha256"),
    pytest.param("other", ("--accept-unpinned",), "stand-in", id="matches-nothing"),
])
def test_from_file_is_standard_only_when_a_digest_vouches(
        graphs: dict[str, Path], cache: Path, official: LoopbackServer, which: str,
        flags: tuple[str, ...], trust: str) -> None:
    assert cli("fetch-weights", "inception").exit_code == 0  # records the official digest
    flags = tuple(sha256_of(graphs[f]) if f in graphs else f for f in flags)
    res = cli("fetch-weights", "inception", "--from", graphs[which], *flags)
    assert res.exit_code == 0, res.stderr
    assert installed(res)["trust"] == trust and installed(res)["first_use"] is False
    found = locate("inception")
    assert found.sha256 == sha256_of(graphs[which])
    assert found.standard is (trust != "stand-in")
    # the official digest stays recorded: an official fetch still passes and is standard
    assert cli("fetch-weights", "inception").exit_code == 0
    assert locate("inception").trust == "official"


def test_from_file_matching_nothing_is_refused_without_the_flag(
        graphs: dict[str, Path], cache: Path, official: LoopbackServer) -> None:
    assert cli("fetch-weights", "inception").exit_code == 0
    before = (cache / "weights" / "weights.json").read_bytes()
    res = cli("fetch-weights", "inception", "--from", graphs["other"])
    assert res.exit_code == 2
    assert "matches no pinned or recorded digest" in error_line(res.stderr)
    assert (cache / "weights" / "weights.json").read_bytes() == before
    assert locate("inception").sha256 == sha256_of(graphs["official"])


def test_a_previously_vouched_digest_is_recorded(tmp_path: Path, cache: Path) -> None:
    pkl = vgg_pickle(tmp_path / "vgg16.pkl", "vgg16")
    assert cli("fetch-weights", "vgg16", "--from", pkl, "--sha256", sha256_of(pkl)).exit_code == 0
    res = cli("fetch-weights", "vgg16", "--from", pkl)  # same file, no digest this time
    assert res.exit_code == 0, res.stderr
    assert installed(res)["trust"] == "recorded" and locate("vgg16").standard


@pytest.mark.parametrize(("url", "official_too"), [
    pytest.param("{srv}/mirror" + TGZ_PATH, True, id="the-mirror-url"),
    pytest.param("{srv}/elsewhere/inception.tgz", False, id="another-url"),
])
def test_url_counts_as_official_only_when_it_is_the_official_one(
        graphs: dict[str, Path], cache: Path, official: LoopbackServer, url: str,
        official_too: bool) -> None:
    official.plan.files["/elsewhere/inception.tgz"] = official.plan.files[f"/mirror{TGZ_PATH}"]
    res = cli("fetch-weights", "inception", "--url", url.format(srv=official.url))
    if official_too:
        assert res.exit_code == 0, res.stderr
        assert installed(res)["trust"] == "official" and installed(res)["first_use"] is True
    else:
        assert res.exit_code == 2
        assert "matches no pinned or recorded digest" in error_line(res.stderr)
        assert not (cache / "weights" / "classify_image_graph_def.pb").exists()


def test_a_damaged_cached_file_is_caught_on_use(
        graphs: dict[str, Path], cache: Path, official: LoopbackServer, tmp_path: Path) -> None:
    assert cli("fetch-weights", "inception").exit_code == 0
    pb = cache / "weights" / "classify_image_graph_def.pb"
    with pb.open("ab") as f:
        f.write(b"x")
    res = cli("evaluate", "--network", tmp_path, "--data", tmp_path, "--metrics", "fid50k",
              "--out", tmp_path / "out")  # the detector is checked before anything is read
    assert res.exit_code == 2
    line = error_line(res.stderr)
    assert f"sha256 {sha256_of(pb)} does not match the expected " \
           f"{sha256_of(graphs['official'])} (recorded in" in line
    assert "stylegan-ops fetch-weights inception" in line
    assert not (tmp_path / "out").exists()
    assert cli("fetch-weights", "inception").exit_code == 0  # the advice repairs it
    assert locate("inception").sha256 == sha256_of(graphs["official"])


def test_the_official_file_must_be_the_archive(cache: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackServer(Plan(files={TGZ_PATH: b"<html>moved</html>"})) as srv:
        monkeypatch.setenv(MIRROR_ENV, srv.url)
        res = cli("fetch-weights", "inception")
    assert res.exit_code == 2
    assert "delivered no tar archive holding classify_image_graph_def.pb" in error_line(
        res.stderr)
    assert not (cache / "weights" / "weights.json").exists()


def test_fetch_weights_downloads_the_archive_member_and_checks_the_pin(
        graphs: dict[str, Path], cache: Path) -> None:
    digest = sha256_of(graphs["official"])
    with LoopbackServer(Plan(files={"/m/i.tgz": inception_tgz(graphs["official"])})) as srv:
        url = f"{srv.url}/m/i.tgz"
        bad = cli("fetch-weights", "inception", "--url", url, "--sha256", "0" * 64)
        assert bad.exit_code == 2
        assert f"sha256 {digest} does not match the expected {'0' * 64}" in bad.stderr
        assert not (cache / "weights" / "classify_image_graph_def.pb").exists()
        res = cli("fetch-weights", "inception", "--url", url, "--sha256", digest)
    assert res.exit_code == 0, res.stderr
    assert installed(res)["trust"] == "user" and installed(res)["sha256"] == digest
    found = locate("inception")
    assert found.standard and found.sha256 == digest


def test_an_unrecorded_file_in_the_cache_is_a_stand_in(tmp_path: Path, cache: Path) -> None:
    (cache / "weights").mkdir(parents=True)
    vgg_pickle(cache / "weights" / "vgg16.pkl", "vgg16")  # copied in by hand
    assert locate("vgg16").trust == "stand-in" and not locate("vgg16").standard


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(("nope",), "unknown detector weights 'nope'", id="unknown"),
    pytest.param(("lpips", "--from", "/no/such.pkl", "--accept-unpinned"),
                 "no such file: /no/such.pkl", id="missing-source"),
    pytest.param(("lpips", "--sha256", "xyz"), "sha256 must be 64 hex digits, got 'xyz'",
                 id="bad-hex"),
    pytest.param(("all", "--sha256", "a" * 64), "apply to one file", id="one-file"),
    pytest.param(("lpips", "--from", "x.pkl", "--url", "http://127.0.0.1:9/x.pkl"),
                 "give --from or --url, not both", id="from-and-url"),
])
def test_fetch_weights_usage_errors(cache: Path, args: tuple[str, ...], message: str) -> None:
    res = cli("fetch-weights", *args)
    assert res.exit_code == 2 and message in error_line(res.stderr)


@pytest.mark.parametrize("mirror", ["ftp://mirror.example.org", "mirror.example.org",
                                    "https://mirror.example.org/?x=1"])
def test_a_bad_mirror_setting_is_a_usage_error(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                               mirror: str) -> None:
    monkeypatch.setenv(MIRROR_ENV, mirror)
    res = cli("fetch-weights", "vgg16")
    assert res.exit_code == 2
    assert f"{MIRROR_ENV} must be an http(s) base URL" in error_line(res.stderr)


def test_missing_weights_name_the_file_and_the_command(cache: Path) -> None:
    with pytest.raises(StageError, match=r"vgg16_zhang_perceptual.pkl is missing from .*; "
                                         "get it with: stylegan-ops fetch-weights lpips"):
        locate("lpips")
