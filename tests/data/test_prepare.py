"""prepare: NVIDIA TFRecords read back by TensorFlow, sharding invariance, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import lmdb
import numpy as np
import pytest
from PIL import Image

from stylegan_ops.data.prepare import PrepareConfig, run
from stylegan_ops.errors import StageError
from tests.conftest import cli, cli_subprocess

RES = 32


def read_with_tensorflow(path: Path) -> list[np.ndarray]:
    """Parse a TFRecord file with TensorFlow's own reader and Example parser."""
    import tensorflow as tf

    features = {"shape": tf.io.FixedLenFeature([3], tf.int64),
                "data": tf.io.FixedLenFeature([], tf.string)}
    images = []
    for raw in tf.data.TFRecordDataset(str(path)):
        ex = tf.io.parse_single_example(raw, features)
        data = tf.io.decode_raw(ex["data"], tf.uint8)
        images.append(tf.reshape(data, ex["shape"]).numpy())
    return images


def reference_images(lmdb_dir: Path, count: int, resolution: int) -> tuple[list[np.ndarray],
                                                                            list[str]]:
    """Independently decode the first ``count`` good records: crop, Lanczos; and bad keys."""
    env = lmdb.open(str(lmdb_dir), readonly=True, lock=False)
    good, bad = [], []
    with env.begin() as txn:
        for key, value in txn.cursor():
            if len(good) == count:
                break
            try:
                img = Image.open(io.BytesIO(value))
                img = img.convert("RGB")
            except Exception:  # noqa: BLE001 - anything PIL cannot open is a bad record
                bad.append(key.decode())
                continue
            w, h = img.size
            c = min(w, h)
            img = img.crop(((w - c) // 2, (h - c) // 2, (w + c) // 2, (h + c) // 2))
            img = img.resize((resolution, resolution), Image.LANCZOS)
            good.append(np.asarray(img).transpose(2, 0, 1))
    env.close()
    return good, bad


@pytest.fixture(scope="module")
def single(sample_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "cats"
    run(PrepareConfig("lsun", sample_lmdb, out, RES, max_images=50, workers=1))
    return out


def test_records_match_an_independent_decode_and_tf_parses_every_level(
        single: Path, sample_lmdb: Path) -> None:
    expected, bad_keys = reference_images(sample_lmdb, 50, RES)
    top = read_with_tensorflow(single / "cats-r05.tfrecords")
    assert len(top) == 50
    assert all(np.array_equal(a, b) for a, b in zip(top, expected, strict=True))
    # Each lower level: chained float32 box means of the float image, rounded at each level.
    floats = [e.astype(np.float32) for e in expected]
    for level in range(4, 1, -1):
        floats = [(f[:, ::2, ::2] + f[:, ::2, 1::2] + f[:, 1::2, ::2] + f[:, 1::2, 1::2]) * 0.25
                  for f in floats]
        got = read_with_tensorflow(single / f"cats-r{level:02d}.tfrecords")
        want = [np.rint(f).clip(0, 255).astype(np.uint8) for f in floats]
        assert [g.shape for g in got] == [(3, 2**level, 2**level)] * 50
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    meta = json.loads((single / "dataset.json").read_text())
    assert meta["count"] == 50 and meta["resolution"] == RES and meta["levels"] == [2, 3, 4, 5]
    assert [r["key"] for r in meta["skipped"]["records"]] == bad_keys
    assert meta["skipped"]["count"] == len(bad_keys) > 0
    assert (single / "reals.png").is_file()


@pytest.mark.parametrize("max_images", [
    pytest.param(8, id="surplus-cut"),  # over-provisioned ranges hold more than needed
    pytest.param(50, id="top-up"),  # damaged records leave the ranges short
    pytest.param(None, id="everything"),
])
def test_workers_are_byte_identical_to_one(sample_lmdb: Path, tmp_path: Path,
                                           max_images: int | None) -> None:
    one, four = tmp_path / "one" / "cats", tmp_path / "four" / "cats"
    run(PrepareConfig("lsun", sample_lmdb, one, RES, max_images=max_images, workers=1))
    run(PrepareConfig("lsun", sample_lmdb, four, RES, max_images=max_images, workers=4))
    for f in [*sorted(one.glob("*.tfrecords")), one / "reals.png"]:
        assert (four / f.name).read_bytes() == f.read_bytes(), f.name
    meta_one = json.loads((one / "dataset.json").read_text())
    meta_four = json.loads((four / "dataset.json").read_text())
    assert meta_one == meta_four
    assert meta_one["count"] == (max_images or 60)


def test_separate_shards_then_merge_equal_a_single_run(single: Path, sample_lmdb: Path,
                                                      tmp_path: Path) -> None:
    shards = []
    for i in range(3):
        shard = tmp_path / f"shard{i}"
        res = cli("prepare", "lsun", sample_lmdb, "--out", shard, "--resolution", RES,
                  "--max-images", 50, "--shard", f"{i}/3")
        assert res.exit_code == 0, res.stderr
        shards.append(shard)
    res = cli("prepare", "merge", *reversed(shards), "--out", tmp_path / "cats")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1])["count"] == 50
    for f in single.glob("*.tfrecords"):
        assert (tmp_path / "cats" / f.name).read_bytes() == f.read_bytes()


def test_merge_refuses_incomplete_or_mixed_shards(sample_lmdb: Path, tmp_path: Path) -> None:
    for i, res_px in ((0, RES), (1, RES), (1, 16)):
        out = tmp_path / f"s{i}-{res_px}"
        assert cli("prepare", "lsun", sample_lmdb, "--out", out, "--resolution", res_px,
                   "--max-images", 20, "--shard", f"{i}/2").exit_code == 0
    missing = cli("prepare", "merge", tmp_path / f"s0-{RES}", "--out", tmp_path / "m")
    assert missing.exit_code == 2 and "shards 0..1" in missing.stderr
    mixed = cli("prepare", "merge", tmp_path / f"s0-{RES}", tmp_path / "s1-16",
                "--out", tmp_path / "m")
    assert mixed.exit_code == 2 and "different request" in mixed.stderr
    assert not (tmp_path / "m").exists()


def test_rerun_with_same_request_reuses_output(single: Path, sample_lmdb: Path) -> None:
    before = (single / "cats-r05.tfrecords").stat().st_mtime_ns
    again = run(PrepareConfig("lsun", sample_lmdb, single, RES, max_images=50))
    assert again.reused and again.count == 50
    assert (single / "cats-r05.tfrecords").stat().st_mtime_ns == before


def test_existing_different_output_is_refused(single: Path, sample_lmdb: Path) -> None:
    with pytest.raises(StageError, match="already exists"):
        run(PrepareConfig("lsun", sample_lmdb, single, RES, max_images=49))


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["--resolution", "48"], "power of two", id="resolution-48"),
    pytest.param(["--resolution", "2"], "power of two", id="resolution-2"),
    pytest.param(["--max-images", "0"], "max-images", id="max-images-0"),
    pytest.param(["--workers", "0"], "workers", id="workers-0"),
])
def test_bad_options_exit_2_naming_the_value(sample_lmdb: Path, tmp_path: Path,
                                             args: list[str], message: str) -> None:
    proc = cli_subprocess("prepare", "lsun", sample_lmdb, "--out", tmp_path / "o", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and args[1] in proc.stderr
    assert not (tmp_path / "o").exists()


def test_non_lmdb_path_exits_2_naming_it(tmp_path: Path) -> None:
    (tmp_path / "notdb").mkdir()
    proc = cli_subprocess("prepare", "lsun", tmp_path / "notdb", "--out", tmp_path / "o")
    assert proc.returncode == 2 and str(tmp_path / "notdb") in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_zero_decodable_images_exits_2(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "junk"), map_size=2**20)
    with env.begin(write=True) as txn:
        txn.put(b"a" * 40, b"")
        txn.put(b"b" * 40, b"garbage")
    env.close()
    res = cli("prepare", "lsun", tmp_path / "junk", "--out", tmp_path / "o", "--resolution", 8)
    assert res.exit_code == 2 and "no decodable images" in res.stderr
    assert not (tmp_path / "o").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["junk"]  # no scratch left behind


def test_folder_of_mixed_images_with_labels(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    modes = {"a.png": ("RGB", (70, 40)), "b.jpg": ("L", (33, 50)),
             "sub/c.png": ("RGBA", (64, 64)), "sub/d.gif": ("P", (20, 30)),
             "e.webp": ("RGB", (100, 90))}
    for name, (mode, size) in modes.items():
        arr = rng.integers(0, 256, size=(size[1], size[0], 4), dtype=np.uint8)
        arr[..., 3] = 255  # opaque: an RGBA image with transparent pixels is skipped
        Image.fromarray(arr, "RGBA").convert(mode).save(folder / name)
    (folder / "f.png").write_bytes(b"broken")
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(folder / "sub/t.png")
    (folder / "notes.txt").write_text("ignored")
    labels = np.eye(7, dtype=np.float32)
    np.save(tmp_path / "labels.npy", labels)
    res = cli("prepare", "images", folder, "--out", tmp_path / "ds", "--resolution", 16,
              "--labels", tmp_path / "labels.npy", "--workers", 2)
    assert res.exit_code == 0, res.stderr
    got = read_with_tensorflow(tmp_path / "ds/ds-r04.tfrecords")
    assert len(got) == 5 and all(g.shape == (3, 16, 16) for g in got)
    stored = np.load(tmp_path / "ds/ds-rxx.labels")
    # files in path order: a, b, e, f (broken), sub/c, sub/d, sub/t (transparent)
    assert np.array_equal(stored, labels[[0, 1, 2, 4, 5]])
    meta = json.loads((tmp_path / "ds/dataset.json").read_text())
    assert [r["key"] for r in meta["skipped"]["records"]] == ["f.png", "sub/t.png"]
    assert "transparent" in meta["skipped"]["records"][1]["reason"]
    assert cli("inspect", tmp_path / "ds").exit_code == 0


def test_labels_with_wrong_row_count_exit_2(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs/a.png")
    np.save(tmp_path / "l.npy", np.zeros((3, 2), np.float32))
    res = cli("prepare", "images", tmp_path / "imgs", "--out", tmp_path / "o",
              "--resolution", 8, "--labels", tmp_path / "l.npy")
    assert res.exit_code == 2 and "l.npy" in res.stderr


def test_an_extraction_from_another_directory_writes_the_same_files(
        sample_lmdb: Path, tmp_path: Path) -> None:
    """dataset.json names the source by file name, not path: the same set extracted in
    another run's directory is the same bytes, so the store makes it one version."""
    import shutil

    outs = []
    for run_dir in ("run1", "run2"):
        source = tmp_path / run_dir / "cat"
        shutil.copytree(sample_lmdb, source)
        out = tmp_path / run_dir / "set"
        res = cli("prepare", "lsun", source, "--out", out, "--resolution", 8,
                  "--max-images", 10)
        assert res.exit_code == 0, res.stderr
        outs.append({p.name: p.read_bytes() for p in out.iterdir()})
    assert outs[0] == outs[1]
    assert json.loads(outs[0]["dataset.json"])["request"]["source"]["path"] == "cat"
