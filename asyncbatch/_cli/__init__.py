"""The `asyncbatch` command line: one module per command family.

`main` parses the arguments (`args`) and dispatches; `watch`, `commands`, `results`, `demo` and
`webhooks` run the commands; `board`, `view` and `render` draw what a command shows; `store` opens
the `--state` store; `exits` names the exit statuses; `io` and `logs` hold the streams and the log
relay. The console script `asyncbatch` is `asyncbatch._cli:main`.
"""

from .main import main, run

__all__ = ["main", "run"]
