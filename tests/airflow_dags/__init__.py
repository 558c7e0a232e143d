"""DAG files run end to end by `tests/test_airflow_dag.py` (``dag.test()``)."""
