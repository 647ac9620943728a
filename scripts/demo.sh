#!/usr/bin/env bash
# The embedded default pipeline, on Airflow: stylegan2_prepare on the generated sample LMDB,
# then stylegan2_train with the `small` preset — both run by `airflow dags test` against a
# local SQLite metadata database, with the local runner. Ends with a summary.
set -euo pipefail
DEMO=${DEMO:-demo-out}
BIN=${BIN:-.venv/bin}
ROOT=$(pwd)
mkdir -p "$DEMO"
DEMO=$(cd "$DEMO" && pwd)
export AIRFLOW_HOME="$DEMO/airflow" AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags" \
  AIRFLOW__CORE__LOAD_EXAMPLES=False STYLEGAN_WORKSPACE="$DEMO/workspace" \
  STYLEGAN_STORE="$DEMO/store" TF_CPP_MIN_LOG_LEVEL=2
CACHE=${STYLEGAN_CACHE:-$HOME/.cache/stylegan_ops}
NVIDIA_CAT=https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/stylegan2-cat-config-f.pkl
log="$DEMO/demo.log"
: > "$log"
step() { echo "[$(date +%H:%M:%S)] $*"; }

step "Airflow metadata database (SQLite) in $AIRFLOW_HOME"
"$BIN/airflow" db migrate >> "$log" 2>&1

# The pretrained branch needs NVIDIA's 256 px cat network: a file in the cache, or the URL
# when it answers; otherwise the branch is skipped and the summary says so.
if [ -f "$CACHE/networks/stylegan2-cat-config-f.pkl" ]; then
  pretrained="\"$CACHE/networks/stylegan2-cat-config-f.pkl\""
elif curl -sfI --max-time 10 "$NVIDIA_CAT" > /dev/null 2>&1; then
  pretrained="\"$NVIDIA_CAT\""
else
  pretrained=null
  step "NOTICE: pretrained branch skipped: no $CACHE/networks/stylegan2-cat-config-f.pkl" \
       "and $NVIDIA_CAT is unreachable"
fi
# FID runs when the Inception file is in the weight cache and passes its sha256 check
# against weights.json; otherwise the notice says which (missing, or damaged) and the fix.
metrics=swd
if why=$("$BIN/python" -c "
from stylegan_ops.errors import StageError
from stylegan_ops.metrics.weights import locate
try:
    locate('inception')
except StageError as exc:
    raise SystemExit(str(exc))" 2>&1); then
  metrics=swd,fid50k
else
  step "NOTICE: FID skipped: $why"
fi

step "stylegan2_prepare: 1000 sample cats → 256 px TFRecords → version lsun-cat-256"
"$BIN/airflow" dags test stylegan2_prepare --conf '{"source_url": "sample",
  "sample_count": 1000, "resolution": 256, "max_images": 1000, "shards": 2,
  "dataset_name": "lsun-cat-256", "tags": ["demo"]}' >> "$log" 2>&1 \
  || { tail -40 "$log"; exit 1; }

# our branch: 6 kimg with the small preset's auto γ and EMA ramp-up, SWD at every
# snapshot (plotted against kimg on the version's page), the best one kept
step "stylegan2_train: small preset (32 px, the dataset's r05 level), 6 kimg, $metrics"
"$BIN/airflow" dags test stylegan2_train --conf "{\"dataset_ref\": \"lsun-cat-256:latest\",
  \"pretrained\": $pretrained, \"config\": \"small\", \"total_kimg\": 6, \"batch\": 32,
  \"tick_kimg\": 1, \"snapshot_ticks\": 2, \"metrics\": \"$metrics\",
  \"train_metrics\": \"swd\", \"keep_best\": \"swd\",
  \"metric_images\": 512, \"seeds\": \"6600-6605\", \"truncation_psi\": 0.5,
  \"tags\": [\"demo\"], \"profiles\": {\"download\": \"cpu\", \"train\": \"cpu\",
  \"evaluate\": \"cpu\", \"generate\": \"cpu\"}}" >> "$log" 2>&1 \
  || { tail -40 "$log"; exit 1; }

"$BIN/python" benchmarks/demo_wall_time.py --summary
echo "  full log: $log"
