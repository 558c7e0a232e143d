"""A user's DAG: one batch through the operator, its summary read by the next task.

Its first try fails after the batch was created (the results path cannot be written), so the
retry must re-attach to that batch; the run's folder comes from ``$ASYNCBATCH_DAG_OUTPUT``.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import dag, task

from asyncbatch.airflow import TwelveLabsBatchOperator

OUTPUT = Path(os.environ.get("ASYNCBATCH_DAG_OUTPUT", "/tmp"))  # noqa: S108 - only when imported bare


@dag(schedule=None, catchup=False, tags=["twelvelabs"])
def twelvelabs_batch() -> None:
    analyse = TwelveLabsBatchOperator(
        task_id="analyse",
        requests=[
            {"video": {"type": "asset_id", "asset_id": f"asset-{n}"}, "custom_id": f"clip-{n}"}
            for n in range(4)
        ],
        defaults={"prompt": {"input_text": "Summarise the video."}},
        # /dev/null is no directory: the first try fails after creating the batch.
        results_path=("{{ '/dev/null/results.jsonl' if ti.try_number == 1 else params.output }}"),
        params={"output": str(OUTPUT / "results.jsonl")},
        min_interval=0.5,
        max_interval=2.0,
        retries=1,
        retry_delay=timedelta(seconds=0),
    )

    @task
    def report(summary: Any) -> None:  # the operator's summary dict, from XCom
        (OUTPUT / "summary.json").write_text(json.dumps(summary))

    report(analyse.output)


the_dag = twelvelabs_batch()
