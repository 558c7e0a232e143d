"""The command line's grammar: one argparse parser per subcommand, each with examples.

`parse` turns ``argv`` into a namespace whose ``command`` names the subcommand.
A usage mistake raises `UsageError` (one line, no usage dump) instead of
printing and exiting as argparse does; ``--help`` and ``--version`` raise
`HelpShown` after writing to the streams they were given, so that the caller
decides the exit status and tests can capture the text.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NoReturn, TextIO
from urllib.parse import urlsplit

from .._models import BatchStatus
from .._version import __version__
from ..testing._sim_config import Flag, FlagKind, config_flags
from .io import PROG


class UsageError(Exception):
    """The command line was wrong; the message names the subcommand and the problem."""


class HelpShown(Exception):
    """``--help`` or ``--version`` was printed; exit with status 0."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing usage and exiting.

    Abbreviated options are off: ``--api`` must not quietly mean ``--api-key``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        message += _did_you_mean(message)
        command = self.prog.removeprefix(PROG).strip()
        where = f"{command}: " if command else ""
        raise UsageError(f"{where}{message} (see '{self.prog} --help')")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageError(f"{message.strip()} (see '{self.prog} --help')")
        raise HelpShown


def _did_you_mean(message: str) -> str:
    """``; did you mean 'watch'?`` for a mistyped subcommand; else nothing."""
    found = re.search(r"argument COMMAND: invalid choice: '([^']*)'", message)
    if found is None:
        return ""
    close = difflib.get_close_matches(found.group(1), [name for name, _, _ in _COMMANDS], n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _rate(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, got {text}")
    return value


def _webhook_url(text: str) -> str:
    if urlsplit(text).scheme not in ("http", "https") or not urlsplit(text).netloc:
        raise argparse.ArgumentTypeError(f"not an http or https URL: {text!r}")
    return text


_EPILOG = """\
environment:
  TWELVELABS_API_KEY         the API key when --api-key is not given (never printed)
  TWELVELABS_BASE_URL        the API root when --base-url is not given
  TWELVELABS_WEBHOOK_SECRET  the webhook secret when none is given (never printed)

exit status:
  0  everything ended well
  1  a batch did not end well (failed items, canceled, expired, gone, watch error),
     a results line was malformed, or a request failed (not found, conflict, network)
  2  usage error, missing or refused API key
  130  interrupted (run: rerun the command to resume)
"""

_EXAMPLES = {
    "status": """\
examples:
  asyncbatch status 68f4ddaf8aaa60d33df0e800
  asyncbatch status --json 68f4ddaf8aaa60d33df0e800 68f4ddaf8aaa60d33df0e801 | jq .status
""",
    "list": """\
examples:
  asyncbatch list
  asyncbatch list --status processing --status pending
  asyncbatch list --mode time_based_metadata --json --limit 20
""",
    "watch": """\
examples:
  asyncbatch watch 68f4ddaf8aaa60d33df0e800 68f4ddaf8aaa60d33df0e801
  asyncbatch watch --all-active --deadline 3600
  asyncbatch watch --jsonl 68f4ddaf8aaa60d33df0e800 | jq -c 'select(.kind == "done")'
  asyncbatch watch --base-url http://127.0.0.1:8000/v1.3 68f4ddaf8aaa60d33df0e800

With --webhook-port, a webhook endpoint runs beside the watcher: every verified
delivery makes it poll at once, so polling only backs it up (the intervals then
default to 30 and 600 s). Register the public URL that leads to
POST /webhooks/twelvelabs on that port in the TwelveLabs dashboard.
  TWELVELABS_WEBHOOK_SECRET=... asyncbatch watch --all-active --webhook-port 8080
  asyncbatch watch --webhook-port 8080 --webhook-host 0.0.0.0 \\
      --webhook-secret "$SECRET" 68f4ddaf8aaa60d33df0e800

With --state, what was reported survives a restart: each event is acknowledged
once its line is written, and the next run resumes every batch in the store
that has not ended (add IDs to watch more), reports what changed meanwhile and
never repeats a batch's end. --jsonl output is then delivered at least once.
  asyncbatch watch --jsonl --state sqlite:///watch.db 68f4ddaf8aaa60d33df0e800 >> events.jsonl
  asyncbatch watch --jsonl --state sqlite:///watch.db >> events.jsonl    # later: resume

With --replica, run the same command on several hosts: each batch is polled by
one replica, the fleet shares --rate, and a stopped replica's batches are taken
over within about 4/3 of --lease seconds. A replica runs until --deadline or Ctrl-C.
  asyncbatch watch --jsonl --state redis://redis.internal:6379/0 --replica \\
      --rate 5 --burst 5 --lease 15 --all-active

With --metrics-port, Prometheus metrics are served at /metrics while watching
(needs prometheus_client, the 'asyncbatch[prometheus]' extra).
  asyncbatch watch --all-active --metrics-port 9464
""",
    "results": """\
A batch that has not ended is refused (exit 1) unless --partial is given.

examples:
  asyncbatch results 68f4ddaf8aaa60d33df0e800 > results.jsonl
  asyncbatch results 68f4ddaf8aaa60d33df0e800 -o results.jsonl
  asyncbatch results --partial 68f4ddaf8aaa60d33df0e800 | head
""",
    "cancel": """\
examples:
  asyncbatch cancel 68f4ddaf8aaa60d33df0e800
""",
    "delete": """\
examples:
  asyncbatch delete 68f4ddaf8aaa60d33df0e800
""",
    "create": """\
The file holds JSON Lines, one request per line, e.g.
  {"video": {"type": "asset_id", "asset_id": "6298d673f1090f1100476d4c"}, "custom_id": "a-1"}
or a JSON array of such requests, or a whole create body (an object with
"requests" and optionally "defaults", "model_name", "analysis_mode").
--prompt, --model and --mode override what the file says.

examples:
  asyncbatch create requests.jsonl --prompt "Summarise the video."
  asyncbatch create requests.jsonl --prompt "List the speakers." --watch
  cat requests.jsonl | asyncbatch create - --prompt "Summarise the video." --json
""",
    "run": """\
A job: any number of requests (FILE: JSON Lines, one request per line) through as
many batches as it takes, at most the account's free slots at a time. --out gets
exactly one JSON line per request once it is final: custom_id, line (of FILE),
status (ready, failed, canceled), data, error, attempts, batch_id, task_id.
Failed requests, and those an expired batch left unfinished, go into new batches
until --max-attempts. Everything is recorded in --state (default: OUT.state.db
beside --out): kill or Ctrl-C the command at any moment and rerun it to resume;
it appends to --out only what is missing. Exit status 130 after Ctrl-C.

examples:
  asyncbatch run requests.jsonl --prompt "Summarise the video." --out results.jsonl \\
      --state sqlite:///job.db --max-attempts 3
  asyncbatch run --cancel --state sqlite:///job.db
""",
    "simulate": """\
Serves a simulated batch API on HOST:PORT until Ctrl-C. Point the other
commands at the URL it prints, with the same API key.

With --webhook-url (repeatable) it also POSTs signed webhooks there when an
item ends (analyze.task.ready / analyze.task.failed) and when a batch ends
(analyze.batch.completed, .canceled or .expired), retrying failed deliveries.

examples:
  asyncbatch simulate --port 8000 --api-key sim-key --time-scale 10
  TWELVELABS_API_KEY=sim-key asyncbatch list --base-url http://127.0.0.1:8000/v1.3
  asyncbatch simulate --api-key sim-key --webhook-secret whsec \\
      --webhook-url http://127.0.0.1:8080/webhooks/twelvelabs
""",
    "webhook-verify": """\
Checks one captured webhook delivery: its raw body (FILE, or standard input)
and its TL-Signature header. Prints the event as JSON and exits 0 when the
signature and timestamp hold; otherwise one error line and exit status 1.
A delivery captured earlier than --tolerance seconds ago needs --now set to
about when it was sent. The secret is never printed.

examples:
  asyncbatch webhook-verify --secret "$SECRET" --signature "t=1784544000,v1=0f59..." < body.json
  TWELVELABS_WEBHOOK_SECRET=... asyncbatch webhook-verify --signature "$HEADER" body.json
  asyncbatch webhook-verify --signature "$HEADER" --now 1784544000 body.json | jq .data
""",
    "demo": """\
Starts a simulator in this process (its API key is made up, none is needed),
creates a few batches of different sizes, cancels one midway, watches them
all live to the end and prints the summary. Lasts about half a minute.

examples:
  asyncbatch demo
  asyncbatch demo --time-scale 100
""",
}


def _api_key(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--api-key", metavar="KEY", help="API key (default: $TWELVELABS_API_KEY); never printed"
    )
    return group


def _common(parser: argparse.ArgumentParser) -> None:
    group = _api_key(parser)
    group.add_argument(
        "--base-url",
        metavar="URL",
        help="API root (default: $TWELVELABS_BASE_URL, else https://api.twelvelabs.io/v1.3)",
    )


def _json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON lines")


def _add_watch_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("watching")
    group.add_argument(
        "--interval",
        type=_positive_float,
        metavar="S",
        help="seconds between polls of a batch that is moving (default: 5; 30 with webhooks)",
    )
    group.add_argument(
        "--max-interval",
        type=_positive_float,
        metavar="S",
        help="longest wait between polls of an idle batch (default: 60; 600 with webhooks)",
    )
    group.add_argument(
        "--deadline",
        type=_non_negative_float,
        metavar="S",
        help="give up on batches still open after this many seconds",
    )
    group.add_argument(
        "--concurrency",
        type=_positive_int,
        default=8,
        metavar="N",
        help="requests in flight at once (default: 8)",
    )
    group.add_argument(
        "--max-failures",
        type=_positive_int,
        default=6,
        metavar="N",
        help="consecutive failed polls (network, 5xx) before giving up on a batch (default: 6)",
    )


def _view_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--jsonl",
        action="store_true",
        help="print one JSON object per event (kind, batch_id, batch, error) instead of the view",
    )
    group.add_argument(
        "--plain", action="store_true", help="plain lines even on a terminal (no live view)"
    )


def _subparser(
    commands: argparse._SubParsersAction[_Parser], name: str, summary: str
) -> argparse.ArgumentParser:
    """A subcommand's parser; every one but ``webhook-verify`` talks to the API."""
    parser = commands.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=_EXAMPLES[name] + "\n" + _EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if name in ("demo", "simulate"):  # they serve their own API: only the key applies
        _api_key(parser)
    elif name != "webhook-verify":
        _common(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The whole grammar: ``asyncbatch COMMAND [options]``."""
    parser = _Parser(
        prog=PROG,
        description="Watch, create and fetch TwelveLabs batch analyses from the command line.",
        epilog="Run 'asyncbatch COMMAND --help' for a command's options and examples.\n\n"
        + _EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for name, summary, add_options in _COMMANDS:
        add_options(_subparser(commands, name, summary))
    return parser


def _status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batch_ids", nargs="+", metavar="ID", help="batch IDs")
    _json_flag(parser, "each batch")


def _list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status",
        action="append",
        choices=[str(s) for s in BatchStatus],
        help="only batches in this status (repeat for several)",
    )
    parser.add_argument(
        "--mode",
        action="append",
        metavar="MODE",
        help="only batches of this analysis mode (general, time_based_metadata)",
    )
    parser.add_argument("--limit", type=_positive_int, metavar="N", help="stop after N batches")
    _json_flag(parser, "each batch")


def _watch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batch_ids", nargs="*", metavar="ID", help="batch IDs to follow")
    parser.add_argument(
        "--all-active",
        action="store_true",
        help="also follow every pending, processing or canceling batch of the account",
    )
    _view_options(parser)
    _add_watch_options(parser)
    group = parser.add_argument_group("webhooks")
    group.add_argument(
        "--webhook-port",
        type=_port,
        metavar="PORT",
        help="receive TwelveLabs webhooks on this port beside the watcher (0: any free one)",
    )
    group.add_argument(
        "--webhook-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the webhook endpoint binds (default: 127.0.0.1)",
    )
    group.add_argument(
        "--webhook-secret",
        metavar="SECRET",
        help="the endpoint's secret (default: $TWELVELABS_WEBHOOK_SECRET); never printed",
    )
    _state_options(parser)
    metrics_options(parser)


def metrics_options(parser: argparse.ArgumentParser) -> None:
    """``--metrics-port`` and ``--metrics-host`` (`metrics.metrics_endpoint` serves them)."""
    group = parser.add_argument_group("metrics")
    group.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics while running (0: any free)",
    )
    group.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the metrics endpoint binds (default: 127.0.0.1)",
    )


def _state_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("durable state and replicas")
    group.add_argument(
        "--state",
        metavar="URL",
        help="remember what was reported in memory://, sqlite:///PATH or redis://HOST:PORT/DB, "
        "and resume every unfinished batch it holds",
    )
    group.add_argument(
        "--replica",
        action="store_true",
        help="share the batches, the request budget and take-over with every replica on "
        "the same redis:// --state; runs until --deadline or Ctrl-C",
    )
    group.add_argument(
        "--owner",
        metavar="NAME",
        help="this replica's name, unique in the fleet (default: HOSTNAME-PID)",
    )
    group.add_argument(
        "--lease",
        type=_positive_float,
        metavar="S",
        help="seconds a replica holds a batch without renewing (default: 15); a stopped "
        "replica's batches move on after about 4/3 of it",
    )
    group.add_argument(
        "--rate",
        type=_positive_float,
        metavar="R",
        help="requests per second at most (with --replica: of the whole fleet together)",
    )
    group.add_argument(
        "--burst",
        type=_positive_float,
        metavar="N",
        help="requests --rate allows at once (default: one second's worth)",
    )


def _check_watch(args: argparse.Namespace) -> None:
    """Combinations argparse cannot express: replica options need --replica, and so on."""
    if args.replica and args.state is None:
        raise UsageError("watch: --replica needs --state redis://HOST:PORT/DB")
    for flag, value in (("--owner", args.owner), ("--lease", args.lease)):
        if value is not None and not args.replica:
            raise UsageError(f"watch: {flag} only applies with --replica")
    if args.burst is not None and args.rate is None:
        raise UsageError("watch: --burst needs --rate")


def _results(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batch_id", metavar="ID", help="batch ID")
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE instead of standard output"
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="write the results of a batch that has not ended yet (queued items included)",
    )


def _cancel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batch_id", metavar="ID", help="batch ID")
    _json_flag(parser, "the batch")


def _delete(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batch_id", metavar="ID", help="batch ID")
    _json_flag(parser, "the outcome")


def _create(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", help="JSON Lines or JSON file of requests; - for stdin"
    )
    parser.add_argument("--prompt", help="the batch's default prompt (defaults.prompt)")
    parser.add_argument("--model", help="model name (default: pegasus1.5)")
    parser.add_argument("--mode", help="analysis mode (default: general)")
    parser.add_argument("--watch", action="store_true", help="follow the new batch until it ends")
    _json_flag(parser, "the created batch")
    _view_options(parser)
    _add_watch_options(parser)


_FLAG_TYPES: dict[FlagKind, Callable[[str], object]] = {
    "text": str,
    "whole": _int,
    "port": _port,
    "positive": _positive_float,
    "rate": _rate,
    "url": _webhook_url,
}

_WEBHOOK_FIELDS = ("webhook_urls", "webhook_secret", "webhook_fault_rate")


def _run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", nargs="?", metavar="FILE", help="JSON Lines file, one request per line"
    )
    parser.add_argument("--prompt", help="every batch's default prompt (defaults.prompt)")
    parser.add_argument("--out", metavar="FILE", help="where each request's outcome goes")
    parser.add_argument(
        "--state",
        metavar="URL",
        help="the job's record: sqlite:///PATH (default: OUT.state.db), "
        "redis://HOST:PORT/DB?prefix=KEYS or memory://",
    )
    parser.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=3,
        metavar="N",
        help="batches a request may go into (default: 3)",
    )
    parser.add_argument("--model", help="model name (default: pegasus1.5)")
    parser.add_argument("--mode", help="analysis mode (default: general)")
    parser.add_argument(
        "--cancel", action="store_true", help="cancel the job in --state and its batches"
    )
    _view_options(parser)
    group = parser.add_argument_group("watching")
    group.add_argument(
        "--interval",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="seconds between polls of a batch that is moving (default: 10)",
    )
    group.add_argument(
        "--max-interval",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="longest wait between polls of an idle batch (default: 60)",
    )
    metrics_options(parser)


def _check_run(args: argparse.Namespace) -> None:
    if args.cancel:
        if args.state is None:
            raise UsageError("run: --cancel needs --state")
        return
    if args.file is None or args.out is None:
        raise UsageError("run: give FILE and --out (or --cancel --state URL)")


def _simulate(parser: argparse.ArgumentParser) -> None:
    """Every flag-carrying field of `SimulatorConfig`, the webhook ones in their own group."""
    group = parser.add_argument_group("webhooks")
    for name, flag, default in config_flags():
        _config_flag(group if name in _WEBHOOK_FIELDS else parser, name, flag, default)


def _config_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    name: str,
    flag: Flag,
    default: object,
) -> None:
    """The flag of one `SimulatorConfig` field: ``item_seconds`` is ``--item-seconds``."""
    default = default if flag.cli_default is None else flag.cli_default
    help_text = flag.help
    if default not in (None, (), "") and "default:" not in help_text:
        shown = f"{default:g}" if isinstance(default, float) else default
        help_text += f" (default: {shown})"
    option = "--" + (name.removesuffix("s") if flag.repeat else name).replace("_", "-")
    parser.add_argument(
        option,
        dest=name,
        type=_FLAG_TYPES[flag.kind],
        action="append" if flag.repeat else "store",
        default=[] if flag.repeat else default,
        metavar=flag.metavar,
        help=help_text,
    )


def _webhook_verify(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", nargs="?", default="-", metavar="FILE", help="the raw body (default: stdin)"
    )
    parser.add_argument(
        "--signature", required=True, metavar="HEADER", help="the TL-Signature header's value"
    )
    parser.add_argument(
        "--secret",
        metavar="SECRET",
        help="the endpoint's secret (default: $TWELVELABS_WEBHOOK_SECRET); never printed",
    )
    parser.add_argument(
        "--tolerance",
        type=_non_negative_float,
        default=300.0,
        metavar="S",
        help="seconds the timestamp may be off (default: 300)",
    )
    parser.add_argument(
        "--now",
        type=_non_negative_float,
        metavar="UNIX",
        help="check the timestamp against this Unix time instead of the system clock",
    )


def _demo(parser: argparse.ArgumentParser) -> None:
    """The demo's simulator options: the config's flags with the demo's defaults."""
    demo_defaults: dict[str, object] = {"time_scale": 10.0, "seed": 9}
    for name, flag, _ in config_flags():
        if name in demo_defaults:
            _config_flag(parser, name, replace(flag, cli_default=demo_defaults[name]), None)
    _view_options(parser)


_COMMANDS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
    ("status", "show the status and item counters of batches", _status),
    ("list", "list the account's batches, newest first", _list),
    ("watch", "follow batches live until they end", _watch),
    ("results", "stream a batch's results as JSON Lines", _results),
    ("cancel", "cancel a batch (queued items stop, running ones finish)", _cancel),
    ("delete", "delete a finished batch and its results", _delete),
    ("create", "create a batch from a file of requests", _create),
    ("run", "run any number of requests as a resumable job, one result each", _run),
    ("simulate", "serve a simulated batch API until Ctrl-C", _simulate),
    ("demo", "watch a few simulated batches live, no API key needed", _demo),
    ("webhook-verify", "check a captured webhook delivery's signature", _webhook_verify),
)


def parse(argv: Sequence[str], stdout: TextIO, stderr: TextIO) -> argparse.Namespace:
    """Parse ``argv``; raises `UsageError`, or `HelpShown` after printing help."""
    parser = build_parser()
    # argparse prints help and version to sys.stdout; send them where the caller wants.
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        args = parser.parse_args(list(argv))
    if args.command == "watch":
        _check_watch(args)
    if args.command == "run":
        _check_run(args)
    return args
