"""tf.data over an NVIDIA-layout dataset's top level: parse → shuffle → batch → prefetch."""

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
    """Endless shuffled batches of NHWC float32 images in [-1, 1]."""
    features = {"shape": tf.io.FixedLenFeature([3], tf.int64),
                "data": tf.io.FixedLenFeature([], tf.string)}

    def parse(record: tf.Tensor) -> tf.Tensor:
        ex = tf.io.parse_single_example(record, features)
        img = tf.reshape(tf.io.decode_raw(ex["data"], tf.uint8), ex["shape"])
        img = tf.transpose(img, [1, 2, 0])  # CHW → HWC
        return tf.cast(img, tf.float32) / 127.5 - 1.0

    ds = tf.data.TFRecordDataset(str(path)).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.shuffle(shuffle, seed=seed).repeat()
    if mirror:  # x-flips double the data, as NVIDIA's --mirror-augment
        ds = ds.map(lambda x: tf.image.random_flip_left_right(x, seed=seed),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
