"""Training: losses, regularizers, augmentation, the loop and its snapshots."""

import re

# TF device names a run may be pinned to: /gpu:0, /device:CPU:1,
# /job:worker/replica:0/task:1/device:GPU:0 (no TensorFlow needed to check them)
DEVICE_RE = re.compile(r"^(/job:[A-Za-z0-9_]+/replica:\d+/task:\d+)?/(device:)?"
                       r"(cpu|gpu|CPU|GPU):\d+$")
MAX_TRAIN_SEED = 2**31 - 1  # D uses seed + 1, the data order seed + step
