"""JSON-schema pieces for the DAGs' params, built from the store's own validators
(``stylegan_ops.store.model``), so the trigger form and ``--conf`` refuse what the store
would refuse and the two grammars cannot drift apart.

The patterns must mean the same in Python's ``re`` (the scheduler and the API validate
with jsonschema) and in JavaScript (the trigger form): so no ``\\Z``; instead ``$(?!\\n)``,
because Python's ``$`` also matches before a final newline.
"""

from __future__ import annotations

from typing import Any

from stylegan_ops.store.model import ID_PREFIX_RE, NAME_RE, TAG_RE


def _exact(body: str) -> str:
    return f"^(?:{body})$(?!\\n)"


NAME_PATTERN = _exact(NAME_RE.pattern)
TAG_PATTERN = _exact(TAG_RE.pattern)
# name, name:latest, name:vN, name:TAG, name@HEXPREFIX; a ':' selector of the form vN is
# read as a number, and parse_ref (run when the ref is resolved) refuses v0 and V3
REF_PATTERN = _exact(f"(?:{NAME_RE.pattern})"
                     f"(?::(?:{TAG_RE.pattern})|@(?:{ID_PREFIX_RE.pattern}))?")
URL_PATTERN = r"^https?://[^\s/?#]+[^\s]*$"
SHA256_PATTERN = "^[0-9a-f]{64}$"
GIT_COMMIT_PATTERN = "^[0-9a-f]{7,64}$"
# tags a user may not set: the reserved 'latest' and the version numbers vN
TAG_ITEMS: dict[str, Any] = {
    "type": "string", "pattern": TAG_PATTERN,
    "not": {"pattern": "^(?:[vV][0-9]+|[Ll][Aa][Tt][Ee][Ss][Tt])$"},
}

# What the repo watcher hands to git: nothing may start with '-' (git would read an
# option, e.g. --upload-pack=<command>); branches follow `git check-ref-format` rules.
REPO_PATTERN = r"^(?:[^\s-]\S*)?$(?!\n)"  # empty: the Variable stylegan_watch_repo
BRANCH_PATTERN = (r"^(?![-/.])(?!.*(?:\.\.|//|@\{|/\.|\.lock$|\.lock/|/$|\.$))"
                  r"[^\s~^:?*\[\\\x00-\x1f\x7f]{1,255}$(?!\n)")
SETTINGS_PATH_PATTERN = r"^(?![-/])(?!(?:.*/)?\.\.(?:/|$))[^\s:\\\x00-\x1f\x7f]{1,255}$(?!\n)"

# The names registered in stylegan_ops.metrics.evaluate.METRICS, listed here because the DAG
# files may not import the metrics code (it pulls in numpy and, through the detectors,
# TensorFlow); tests/airflow/test_trigger_forms.py keeps the two equal.
METRIC_NAMES = ("fid50k", "fid50k_full", "kid50k_full", "pr50k3_full", "is50k", "ppl2_wend",
                "swd")
# the older comma-separated form (``fid50k,swd``), still taken from --conf and settings files
METRICS_TEXT_PATTERN = _exact(f"(?:{'|'.join(METRIC_NAMES)})(?:,(?:{'|'.join(METRIC_NAMES)}))*")
# the same, or empty for none (metrics during training are optional)
OPTIONAL_METRICS_TEXT_PATTERN = _exact(
    f"(?:(?:{'|'.join(METRIC_NAMES)})(?:,(?:{'|'.join(METRIC_NAMES)}))*)?")
# ADA's transform groups, as `stylegan-ops train --augpipe` takes them (listed here for the
# same reason as METRIC_NAMES; tests/airflow/test_finetune_dag.py keeps the two equal)
AUGPIPES = ("blit", "geom", "color", "bgc", "bgcf", "bgcfn", "bgcfnc")
# The profile names of the packaged profiles.yaml; a STYLEGAN_PROFILES file may define
# others, so the forms suggest these rather than refuse the rest.
DEFAULT_PROFILES = ("cpu", "gpu")


def _cache_params() -> dict[str, Any]:
    from airflow.sdk import Param

    from stylegan_airflow.reuse import KINDS

    return {
        "cache": Param(True, type="boolean",
                       description="Reuse stage results: a stage whose cache key (stage, "
                                   "arguments, input versions, code) matches a committed "
                                   "version does no work and returns that version (default "
                                   "on); off recomputes every stage."),
        "recompute": Param([], type=["null", "array"], uniqueItems=True,
                           items={"type": "string", "enum": list(KINDS)},
                           examples=list(KINDS),
                           description="Stage kinds to recompute even when a result with "
                                       f"their cache key exists, any of {', '.join(KINDS)} "
                                       "(default: none)."),
    }


CACHE_PARAMS = _cache_params()
