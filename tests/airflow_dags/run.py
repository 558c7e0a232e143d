"""Runs one DAG file with ``dag.test()`` and prints its final state (a child process of a test).

Usage: ``python -m tests.airflow_dags.run MODULE``; ``$AIRFLOW_HOME`` must hold a migrated
database. `dag.test()` returns a failed run instead of raising, so the state is what counts.
"""

from __future__ import annotations

import importlib
import sys


def main(module_name: str) -> None:
    module = importlib.import_module(module_name)
    run = module.the_dag.test()
    print(f"dag-run-state: {run.state}")


if __name__ == "__main__":
    main(sys.argv[1])
