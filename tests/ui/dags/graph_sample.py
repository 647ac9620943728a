"""A DAG with one task of every function, one of none, a mapped task and a sensor."""

from __future__ import annotations

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.sdk import DAG, task
from stylegan_airflow.operators import DatasetVersionOperator

with DAG(dag_id="graph_sample", schedule=None, catchup=False) as dag:

    @task
    def shard_plan() -> list[int]:
        return [1, 2]

    @task
    def extract(shard: int) -> int:
        return shard

    wait_for_quiet = TimeDeltaSensor(task_id="wait_for_quiet", delta=0)
    evaluate_pretrained = EmptyOperator(task_id="evaluate_pretrained")
    train = EmptyOperator(task_id="train")
    commit_everything = DatasetVersionOperator(task_id="commit_everything", source="/tmp/x",
                                               name="sample-cats")
    make_coffee = EmptyOperator(task_id="make_coffee")  # no rule knows this function

    mapped = extract.expand(shard=shard_plan())
    wait_for_quiet >> mapped >> [evaluate_pretrained, train] >> commit_everything >> make_coffee
