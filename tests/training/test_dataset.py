"""The training input pipeline: the batches are the ones "decode every record, then shuffle
the images" gives (the shuffle now holds serialized records), mirroring flips whole images
reproducibly, and a record of another shape fails instead of being read with the first's.

The records are written here with ``tf.train.Example`` and ``tf.io.TFRecordWriter`` as
NVIDIA's dataset tool lays them out (``shape`` [C, H, W] int64, ``data`` CHW uint8 bytes),
not through our prepare stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from stylegan_ops.training.dataset import image_dataset

COUNT, RES = 40, 8


def image(i: int) -> np.ndarray:
    """CHW uint8: channel c of image i holds i·6 + c, plus a left-to-right ramp, so an
    x-flip and a channel or axis mix-up both show."""
    ramp = np.arange(RES, dtype=np.uint8)[None, None, :] * 2
    return (np.full((3, RES, RES), i * 6, np.uint8) + np.arange(3, dtype=np.uint8)[:, None, None]
            + ramp)


def write(path: Path, shapes: list[tuple[int, int, int]] | None = None) -> Path:
    with tf.io.TFRecordWriter(str(path)) as w:
        for i in range(COUNT):
            img = image(i)
            shape = shapes[i] if shapes else img.shape
            w.write(tf.train.Example(features=tf.train.Features(feature={
                "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(shape))),
                "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[img.tobytes()])),
            })).SerializeToString())
    return path


def nhwc(i: int) -> np.ndarray:
    return image(i).transpose(1, 2, 0).astype(np.float32) / 127.5 - 1.0


def decode_then_shuffle(path: Path, batch: int, seed: int, shuffle: int) -> tf.data.Dataset:
    """The order the pipeline promises: every record decoded, the images shuffled."""
    def parse(record: tf.Tensor) -> tf.Tensor:
        ex = tf.io.parse_single_example(record, {
            "shape": tf.io.FixedLenFeature([3], tf.int64),
            "data": tf.io.FixedLenFeature([], tf.string)})
        img = tf.reshape(tf.io.decode_raw(ex["data"], tf.uint8), ex["shape"])
        return tf.cast(tf.transpose(img, [1, 2, 0]), tf.float32) / 127.5 - 1.0

    ds = tf.data.TFRecordDataset(str(path)).map(parse).shuffle(shuffle, seed=seed).repeat()
    return ds.batch(batch, drop_remainder=True)


def batches(ds: tf.data.Dataset, n: int) -> list[np.ndarray]:
    it = iter(ds)
    return [next(it).numpy() for _ in range(n)]


@pytest.mark.parametrize(("batch", "seed", "shuffle"), [
    pytest.param(8, 0, 4096, id="buffer-larger-than-the-set"),
    pytest.param(6, 3, 16, id="small-buffer-batches-across-epochs"),
])
def test_batches_are_decode_then_shuffle_order(tmp_path: Path, batch: int, seed: int,
                                               shuffle: int) -> None:
    path = write(tmp_path / "ds-r03.tfrecords")
    n = 2 * COUNT // batch + 1  # into the third epoch
    got = batches(image_dataset(path, batch, False, seed, shuffle), n)
    want = batches(decode_then_shuffle(path, batch, seed, shuffle), n)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == np.float32 and a.shape == (batch, RES, RES, 3)
        np.testing.assert_array_equal(a, b)
    # each image is one of the records, whole (the order is a permutation per epoch)
    first = np.concatenate(got)[:COUNT - COUNT % batch]
    index = [int(np.rint((x[0, 0, 0] + 1) * 127.5)) // 6 for x in first]
    for x, i in zip(first, index, strict=True):
        np.testing.assert_array_equal(x, nhwc(i))
    assert len(set(index)) == len(index)


def test_mirror_flips_whole_images_about_half_reproducibly(tmp_path: Path) -> None:
    path = write(tmp_path / "ds-r03.tfrecords")
    got = np.concatenate(batches(image_dataset(path, 8, True, 5), 20))
    plain = np.concatenate(batches(image_dataset(path, 8, False, 5), 20))
    flipped = [bool(np.array_equal(a, b[:, ::-1])) for a, b in zip(got, plain, strict=True)]
    same = [bool(np.array_equal(a, b)) for a, b in zip(got, plain, strict=True)]
    assert all(f != s for f, s in zip(flipped, same, strict=True))  # one or the other
    assert 0.3 < np.mean(flipped) < 0.7, np.mean(flipped)
    again = np.concatenate(batches(image_dataset(path, 8, True, 5), 20))
    np.testing.assert_array_equal(again, got)
    other = np.concatenate(batches(image_dataset(path, 8, True, 6), 20))
    assert not np.array_equal(other, got)


def test_a_record_of_another_shape_fails(tmp_path: Path) -> None:
    shapes = [(3, RES, RES)] * COUNT
    shapes[3] = (3, RES // 2, RES * 2)  # the same byte count, another shape
    path = write(tmp_path / "ds-r03.tfrecords", shapes)
    with pytest.raises(tf.errors.InvalidArgumentError, match="differ in shape"):
        batches(image_dataset(path, COUNT, False, 0), 1)
