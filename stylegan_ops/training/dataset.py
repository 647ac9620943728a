"""tf.data over an NVIDIA-layout dataset's top level: shuffle → batch → parse → prefetch."""

from __future__ import annotations

import re
from pathlib import Path

import tensorflow as tf

from stylegan_ops.errors import StageError

LEVEL_RE = re.compile(r"^(?P<name>.+)-r(?P<level>\d\d)\.tfrecords$")


def level_file(data: Path, resolution: int) -> Path:
    """The file of ``resolution`` px images: NVIDIA's layout stores every power of two up to
    the top, so a 256 px dataset also serves a 32 px network (its r05 level)."""
    top, top_res = top_level(data)
    if resolution == top_res:
        return top
    if resolution > top_res:
        raise StageError(f"dataset {data} is {top_res} px but the network makes "
                         f"{resolution} px images")
    m = LEVEL_RE.match(top.name)
    assert m is not None
    path = data / f"{m['name']}-r{resolution.bit_length() - 1:02d}.tfrecords"
    if resolution & (resolution - 1) or not path.is_file():
        raise StageError(f"dataset {data} has no {resolution} px level ({path.name})")
    return path


def top_level(data: Path) -> tuple[Path, int]:
    """The highest-resolution TFRecord file of a dataset directory and its resolution."""
    if not data.is_dir():
        raise StageError(f"not a dataset directory: {data}")
    levels = {int(m["level"]): data / p.name for p in data.iterdir()
              if (m := LEVEL_RE.match(p.name))}
    if not levels:
        raise StageError(f"not an NVIDIA-layout dataset (no *-rNN.tfrecords): {data}")
    top = max(levels)
    return levels[top], 2**top


def image_dataset(path: Path, batch: int, mirror: bool, seed: int,
                  shuffle: int = 4096) -> tf.data.Dataset:
    """Endless shuffled batches of NHWC float32 images in [-1, 1].

    The serialized records are shuffled, not decoded images: the buffer holds the uint8
    bytes, a quarter of float32 (0.8 GB instead of 3.2 GB for 4096 images at 256 px), and
    since a shuffle's order depends only on its seed and buffer, the batches are the ones
    decoding first would give. Each batch is parsed in one vectorised call, in parallel
    with training; with ``mirror`` half the images, drawn statelessly from (seed, batch
    number), are x-flipped, so the same seed gives the same batches."""
    ds = tf.data.TFRecordDataset(str(path)).shuffle(shuffle, seed=seed).repeat()
    ds = ds.batch(batch, drop_remainder=True)
    ds = ds.map(_parse_batch, num_parallel_calls=tf.data.AUTOTUNE)
    if mirror:  # x-flips double the data, as NVIDIA's --mirror-augment
        ds = ds.enumerate().map(
            lambda i, x: tf.image.stateless_random_flip_left_right(
                x, tf.stack([tf.cast(seed, tf.int64), i])),
            num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


_FEATURES = {"shape": tf.io.FixedLenFeature([3], tf.int64),
             "data": tf.io.FixedLenFeature([], tf.string)}


def _parse_batch(records: tf.Tensor) -> tf.Tensor:
    """A batch of serialized Examples (``shape`` [C, H, W], ``data`` CHW uint8) → NHWC
    float32 in [-1, 1]. Every record of a level has the same shape; one that differs
    fails the step rather than being read with another's."""
    ex = tf.io.parse_example(records, _FEATURES)
    shape = ex["shape"][0]
    tf.debugging.assert_equal(ex["shape"], tf.broadcast_to(shape, tf.shape(ex["shape"])),
                              message="records of one level differ in shape")
    img = tf.reshape(tf.io.decode_raw(ex["data"], tf.uint8), tf.concat([[-1], shape], 0))
    img = tf.transpose(img, [0, 2, 3, 1])  # NCHW → NHWC
    return tf.cast(img, tf.float32) / 127.5 - 1.0
