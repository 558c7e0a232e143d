"""One user's DAG, end to end: ``dag.test()`` in a child process against ``asyncbatch simulate``.

Real Airflow (its own metadata database in a temporary ``$AIRFLOW_HOME``), a real simulator
process, the connection from ``AIRFLOW_CONN_TWELVELABS_DEFAULT``. Skipped without Airflow
(``make test-airflow`` has it; ``ASYNCBATCH_REQUIRE_AIRFLOW=1`` makes that a failure).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

if os.environ.get("ASYNCBATCH_REQUIRE_AIRFLOW"):
    import airflow  # noqa: F401 - a missing Airflow fails here in CI instead of skipping
pytest.importorskip("airflow", reason="Airflow is not installed: run `make test-airflow`")

from asyncbatch import Client
from tests._docs import blocks

ROOT = Path(__file__).parent.parent
KEY = "dag-secret-key-91b3"
BIN = Path(sys.executable).parent


@pytest.fixture
def simulator() -> Iterator[str]:
    """``asyncbatch simulate`` on a free port, items of about a second; yields its URL."""
    process = subprocess.Popen(  # noqa: S603 - our own fixed arguments
        [BIN / "asyncbatch", "simulate", "--api-key", KEY, "--port", "0", "--item-seconds", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    try:
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def airflow_env(
    home: Path, base_url: str, output: Path, dags: Path = ROOT / "tests" / "airflow_dags"
) -> dict[str, str]:
    connection = {"conn_type": "generic", "host": base_url, "password": KEY}
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW_CONN_TWELVELABS_DEFAULT": json.dumps(connection),
        "ASYNCBATCH_DAG_OUTPUT": str(output),
        "PYTHONPATH": str(ROOT),
    }


async def batches_on(base_url: str) -> list[str]:
    async with Client(api_key=KEY, base_url=base_url) as client:
        return [batch.batch_id async for batch in client.batches.list()]


def run_dag(target: str, env: dict[str, str]) -> str:
    """Migrate the metadata database, ``dag.test()`` the DAG, and answer the output."""
    subprocess.run(  # noqa: S603 - our own fixed arguments
        [BIN / "airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=120
    )
    run = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "tests.airflow_dags.run", target],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return run.stdout + run.stderr


@pytest.mark.timeout(240)
def test_the_dag_of_docs_airflow_md_runs(simulator: str, tmp_path: Path) -> None:
    """The DAG in docs/airflow.md runs to success against the simulator: its batch task writes the
    results it reports, its job task one ready line per request with state under AIRFLOW_HOME,
    and the key is in no log."""
    [block] = [b for b in blocks(ROOT / "docs" / "airflow.md") if b.language == "python"]
    dags = tmp_path / "dags"
    dags.mkdir()
    dag_file = dags / "analyse_clips.py"
    dag_file.write_text(block.code)
    requests = tmp_path / "input" / "clips.jsonl"
    requests.parent.mkdir()
    requests.write_text(
        "".join(json.dumps({"video": {"asset_id": f"job-{n}"}}) + "\n" for n in range(5))
    )
    env = airflow_env(tmp_path / "home", simulator, tmp_path, dags)
    env["AIRFLOW_VAR_RESULTS_DIR"] = str(tmp_path)
    env["AIRFLOW_VAR_REQUESTS_FILE"] = str(requests)
    log = run_dag(str(dag_file), env)
    assert "dag-run-state: success" in log, log[-4000:]
    batches = anyio.run(batches_on, simulator)
    reported = re.search(r"batch ([0-9a-f]{24}): 3 ready, 0 failed, results in (\S+)", log)
    assert reported is not None, log[-4000:]
    assert reported[1] in batches
    assert len(Path(reported[2]).read_text().splitlines()) == 3
    # The job: one line per request of the file, in batches of its own, state under AIRFLOW_HOME.
    [job_results] = tmp_path.glob("*.job.jsonl")
    lines = [json.loads(line) for line in job_results.read_text().splitlines()]
    assert sorted(line["line"] for line in lines) == [1, 2, 3, 4, 5]
    assert {line["status"] for line in lines} == {"ready"}
    assert {line["batch_id"] for line in lines} <= set(batches) - {reported[1]}
    assert "job: {'waiting': 0, 'running': 0, 'ready': 5, 'failed': 0, 'canceled': 0}" in log
    assert list((tmp_path / "home" / "asyncbatch" / "jobs" / "analyse_clips").glob("*.db"))
    assert KEY not in log


@pytest.mark.timeout(240)
def test_the_dag_of_the_readme_runs(simulator: str, tmp_path: Path) -> None:
    """The README's DAG runs to success against the simulator with one batch, the one its log
    reports, and the key is in no log."""
    [block] = [b for b in blocks(ROOT / "README.md") if "from airflow.sdk import" in b.code]
    dags = tmp_path / "dags"
    dags.mkdir()
    dag_file = dags / "summarise_clips.py"
    dag_file.write_text(block.code)
    env = airflow_env(tmp_path / "home", simulator, tmp_path, dags)
    env["AIRFLOW_VAR_RESULTS_DIR"] = str(tmp_path)
    log = run_dag(str(dag_file), env)
    assert "dag-run-state: success" in log, log[-4000:]
    reported = re.search(r"batch ([0-9a-f]{24}): 3 ready", log)
    assert reported is not None, log[-4000:]
    assert anyio.run(batches_on, simulator) == [reported[1]]
    assert KEY not in log


@pytest.mark.timeout(240)
def test_a_dag_with_the_operator_runs_end_to_end_and_its_retry_reattaches(
    simulator: str, tmp_path: Path
) -> None:
    """A DAG whose first try fails after creating its batch succeeds on the retry, which re-attaches
    to that same batch (no second one) and writes its summary and every result."""
    env = airflow_env(tmp_path / "home", simulator, tmp_path)
    log = run_dag("tests.airflow_dags.twelvelabs_batch", env)
    assert "dag-run-state: success" in log, log[-4000:]
    # The first try failed after creating the batch; the retry waited on that same batch.
    [batch_id] = anyio.run(batches_on, simulator)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["batch_id"] == batch_id
    assert summary["status"] == "completed"
    assert summary["total_items"] == summary["ready_items"] == 4
    assert summary["failed_items"] == 0
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in lines) == [
        f"clip-{n}" for n in range(4)
    ]
    assert "re-attaching to batch" in log
    assert KEY not in log
