"""Training: losses, regularizers, augmentation, the loop and its snapshots."""

import re

# TF device names a run may be pinned to: /gpu:0, /device:CPU:1,
# /job:worker/replica:0/task:1/device:GPU:0 (no TensorFlow needed to check them)
DEVICE_RE = re.compile(r"^(/job:[A-Za-z0-9_]+/replica:\d+/task:\d+)?/(device:)?"
                       r"(cpu|gpu|CPU|GPU):\d+$")
MAX_TRAIN_SEED = 2**31 - 1  # D uses seed + 1, the data order seed + step

# Snapshots and fakes grids are named by the images shown, in kimg with three decimals
# (``network-snapshot-000000.512``, ``fakes000000.512.png``): distinct for every snapshot
# even with --tick-kimg below 1, and sorted by name = sorted by kimg (fixed width).
# NVIDIA's names (``network-snapshot-000512``, ``fakes000512.png``: whole kimg) still read.
SNAPSHOT_RE = re.compile(r"^network-snapshot-(?P<kimg>\d{6}(?:\.\d{3})?)$")
FAKES_RE = re.compile(r"^fakes(?P<kimg>\d{6}(?:\.\d{3})?)\.png$")


def kimg_label(nimg: int) -> str:
    """``nimg`` images shown as kimg with three decimals, zero-padded: 512 → 000000.512."""
    if nimg < 0:
        raise ValueError(f"images shown must be >= 0, got {nimg}")
    return f"{nimg // 1000:06d}.{nimg % 1000:03d}"


def snapshot_name(nimg: int) -> str:
    return f"network-snapshot-{kimg_label(nimg)}"


def fakes_name(nimg: int) -> str:
    return f"fakes{kimg_label(nimg)}.png"


def name_kimg(name: str) -> float | None:
    """The kimg a snapshot or fakes-grid name stands for (ours or NVIDIA's); None if
    ``name`` is neither."""
    m = SNAPSHOT_RE.match(name) or FAKES_RE.match(name)
    return float(m["kimg"]) if m else None
