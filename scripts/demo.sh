#!/usr/bin/env bash
# The embedded default job: generate the sample LSUN LMDB, extract a training set, check it.
set -euo pipefail
DEMO=${DEMO:-demo-out}
BIN=${BIN:-.venv/bin}
ops="$BIN/stylegan-ops"
mkdir -p "$DEMO"
if [ ! -d "$DEMO/sample-lmdb" ]; then
  "$ops" make-sample-lmdb --out "$DEMO/sample-lmdb" --count 1000
fi
"$ops" prepare lsun "$DEMO/sample-lmdb" --out "$DEMO/lsun-cat-256" --resolution 256 \
  --max-images 1000 --workers "$(nproc)" > "$DEMO/prepare.json"
"$ops" inspect "$DEMO/lsun-cat-256" > "$DEMO/inspect.json"
"$BIN/python" - "$DEMO" <<'PY'
import json, sys
from pathlib import Path
demo = Path(sys.argv[1])
prep = json.loads((demo / "prepare.json").read_text().splitlines()[-1])
report = json.loads((demo / "inspect.json").read_text().splitlines()[-1])
print(f"\nDemo done: {prep['count']} images at {prep['resolution']} px, "
      f"{prep['skipped']} damaged records skipped, levels r{report['levels'][0]:02d}"
      f"..r{report['levels'][-1]:02d} checked.")
print(f"  TFRecords: {Path(prep['out']).resolve()}")
print(f"  montage:   {(Path(prep['out']) / 'reals.png').resolve()}")
print(f"  metadata:  {(Path(prep['out']) / 'dataset.json').resolve()}")
PY
