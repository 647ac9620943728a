"""A test-only DAG: two committed versions, the second made from the first."""

from __future__ import annotations

from airflow.sdk import DAG, Param
from stylegan_airflow.operators import DatasetVersionOperator

with DAG("lineage_test", schedule=None, render_template_as_native_obj=True,
         params={"git_commit": Param(None), "knob": Param(3), "data_dir": Param(""),
                 "model_dir": Param("")}) as dag:
    data = DatasetVersionOperator(task_id="data", source="{{ params.data_dir }}",
                                  name="lineage-data")
    model = DatasetVersionOperator(task_id="model", source="{{ params.model_dir }}",
                                   name="lineage-model", inputs=["data"])
    data >> model
