"""inspect: accepts good datasets (ours and TensorFlow-written), rejects broken layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from stylegan_ops.data.prepare import PrepareConfig, pyramid, run
from tests.conftest import cli


@pytest.fixture(scope="module")
def dataset(sample_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("inspect") / "cats"
    run(PrepareConfig("lsun", sample_lmdb, out, 16, max_images=12))
    return out


def test_good_dataset_passes(dataset: Path) -> None:
    res = cli("inspect", dataset)
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout.splitlines()[-1])
    assert report["count"] == 12 and report["resolution"] == 16 and report["levels"] == [2, 3, 4]
    assert report["checked"] == 12 and report["problems"] == []


def test_dataset_written_by_tensorflow_passes(tmp_path: Path) -> None:
    """A directory as NVIDIA's tool writes it: tf.io.TFRecordWriter, TF's own Example."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (3, 8, 8), dtype=np.uint8) for _ in range(4)]
    writers = {lvl: tf.io.TFRecordWriter(str(tmp_path / f"nv-r{lvl:02d}.tfrecords"))
               for lvl in (2, 3)}
    for img in images:
        for level_img in pyramid(img):
            ex = tf.train.Example(features=tf.train.Features(feature={
                "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=level_img.shape)),
                "data": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[level_img.tobytes()]))}))
            writers[level_img.shape[1].bit_length() - 1].write(ex.SerializeToString())
    for w in writers.values():
        w.close()
    res = cli("inspect", tmp_path)
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1])["count"] == 4


def _broken_copy(dataset: Path, tmp_path: Path, how: str) -> Path:
    broken = tmp_path / "cats"
    shutil.copytree(dataset, broken)
    if how == "missing-level":
        (broken / "cats-r03.tfrecords").unlink()
    elif how == "short-level":
        data = (broken / "cats-r02.tfrecords").read_bytes()
        (broken / "cats-r02.tfrecords").write_bytes(data[: len(data) * 3 // 4 // 98 * 98])
    elif how == "wrong-box-mean":
        # Swap the r03 file for another dataset's: valid records, wrong relation.
        src = broken / "cats-r03.tfrecords"
        payload = src.read_bytes()
        rec = len(payload) // 12
        src.write_bytes(payload[rec:2 * rec] + payload[:rec] + payload[2 * rec:])
    elif how == "flipped-byte":
        data = bytearray((broken / "cats-r04.tfrecords").read_bytes())
        data[100] ^= 0xFF
        (broken / "cats-r04.tfrecords").write_bytes(bytes(data))
    return broken


@pytest.mark.parametrize(("how", "message"), [
    pytest.param("missing-level", "missing levels: r03", id="missing-level"),
    pytest.param("short-level", "different image counts", id="short-level"),
    pytest.param("wrong-box-mean", "not the 2x2 box mean", id="wrong-box-mean"),
    pytest.param("flipped-byte", "crc mismatch", id="flipped-byte"),
])
def test_broken_layouts_exit_nonzero(dataset: Path, tmp_path: Path, how: str,
                                     message: str) -> None:
    res = cli("inspect", _broken_copy(dataset, tmp_path, how))
    assert res.exit_code == 2
    assert message in res.stderr


def test_directory_without_records_exits_2(tmp_path: Path) -> None:
    res = cli("inspect", tmp_path)
    assert res.exit_code == 2 and "no *-rNN.tfrecords" in res.stderr
