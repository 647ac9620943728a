"""stylegan2_watch_repo: one pipeline run per new commit of the pipeline's Git repository.

Every few minutes a sensor looks for commits on the watched branch that were not fired for
yet. For each (oldest first) it reads the settings file at that commit and triggers the
DAG it names with its conf plus ``git_commit``. Run ids are ``commit__<sha>``, so a commit
can never trigger twice; the remembered head moves only after the triggers succeeded, so
none is missed, and it lives in an Airflow Variable, so restarts change nothing.

Settings file (``stylegan2.yaml`` at the repository root)::

    dag: stylegan2_prepare        # stylegan2_prepare or stylegan2_train
    conf:                         # that DAG's params
      source_url: sample
      resolution: 64
      max_images: 500
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param, task
from stylegan_airflow.params import BRANCH_PATTERN, REPO_PATTERN, SETTINGS_PATH_PATTERN
from stylegan_airflow.sensors import GitCommitSensor, plan_commit, remember

ALLOWED = ["stylegan2_prepare", "stylegan2_train"]
# How long one scheduled run looks for news before it skips (the next run looks again).
WATCH_SECONDS = int(os.environ.get("STYLEGAN_WATCH_TIMEOUT", "240"))
POKE_SECONDS = int(os.environ.get("STYLEGAN_WATCH_POKE", "30"))

with DAG(
    dag_id="stylegan2_watch_repo",
    description="Trigger the pipeline once per new commit of its Git repository",
    schedule=timedelta(minutes=5),
    start_date=None,
    catchup=False,
    max_active_runs=1,
    params={
        "repo": Param(os.environ.get("STYLEGAN_WATCH_REPO", ""), type="string",
                      pattern=REPO_PATTERN,
                      description="owner/name (github) or a git URL/path (git); empty: the "
                                  "Variable stylegan_watch_repo"),
        "branch": Param(os.environ.get("STYLEGAN_WATCH_BRANCH", "main"), type="string",
                        pattern=BRANCH_PATTERN,
                        description="Branch whose new commits trigger runs (default main, or "
                                    "$STYLEGAN_WATCH_BRANCH), e.g. feature/x."),
        "backend": Param(os.environ.get("STYLEGAN_WATCH_BACKEND", "github"), type="string",
                         enum=["github", "git"],
                         description="How the repo is read: github (the REST API through "
                                     "github_conn_id, the default) or git (git ls-remote and "
                                     "fetch)."),
        "github_conn_id": Param("github_default", type="string", minLength=1,
                                description="Airflow connection with the GitHub token, used "
                                            "by the github backend (default github_default)."),
        "settings_path": Param("stylegan2.yaml", type="string", pattern=SETTINGS_PATH_PATTERN,
                               description="Path of the settings file inside the repo, "
                                           "relative, no .. (default stylegan2.yaml)."),
        # examples, not an enum: the form offers these two, --conf may allow another DAG
        "allowed_dags": Param(ALLOWED, type="array", items={"type": "string"},
                              uniqueItems=True, examples=ALLOWED,
                              description="DAGs a settings file may trigger (default: "
                                          f"{' and '.join(ALLOWED)}); a commit naming any "
                                          "other runs nothing."),
    },
    tags=["stylegan2"],
    doc_md=__doc__,
) as dag:
    repo = "{{ params.repo or var.value.get('stylegan_watch_repo', '') }}"
    watch = GitCommitSensor(
        task_id="watch", repo=repo, branch="{{ params.branch }}", backend="{{ params.backend }}",
        settings_path="{{ params.settings_path }}", github_conn_id="{{ params.github_conn_id }}",
        mode="reschedule", poke_interval=POKE_SECONDS, timeout=WATCH_SECONDS, soft_fail=True,
    )

    @task
    def plan_runs(found: dict[str, Any], params: dict[str, Any]) -> list[dict[str, Any]]:
        """A trigger per commit whose settings file names an allowed DAG (the webhook
        applies the same rule)."""
        runs = []
        for commit in found["commits"]:
            run, reason = plan_commit(commit["sha"], commit["settings"], params["allowed_dags"])
            if run is None:
                print(f"{commit['sha']}: {reason}; nothing to run")
                continue
            runs.append({"trigger_dag_id": run["dag_id"], "trigger_run_id": run["run_id"],
                         "conf": run["conf"]})
        return runs

    @task(trigger_rule="none_failed_min_one_success")
    def remember_head(found: dict[str, Any]) -> str:
        """Move the remembered head only now that every run exists."""
        head = str(found["commits"][-1]["sha"])
        remember(found["backend"], found["repo"], found["branch"], head)
        return head

    runs = plan_runs(watch.output)
    trigger = TriggerDagRunOperator.partial(
        task_id="trigger", skip_when_already_exists=True, wait_for_completion=False,
    ).expand_kwargs(runs)
    trigger >> remember_head(watch.output)
