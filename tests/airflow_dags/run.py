"""Runs one DAG file with ``dag.test()`` and prints its final state (a child process of a test).

Usage: ``python -m tests.airflow_dags.run MODULE`` (a dotted name or a ``.py`` file);
``$AIRFLOW_HOME`` must hold a migrated database. `dag.test()` returns a failed run instead
of raising, so the state is what counts.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys


def main(module_name: str) -> None:
    if module_name.endswith(".py"):
        spec = importlib.util.spec_from_file_location("dag_file", module_name)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    run = module.the_dag.test()
    print(f"dag-run-state: {run.state}")


if __name__ == "__main__":
    main(sys.argv[1])
