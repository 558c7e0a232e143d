"""The one-request commands through the real entry point, against the simulator:
status, list, cancel, delete, results, create; usage, key and network failures."""

from __future__ import annotations

import io
import json

import msgspec
import pytest

from asyncbatch import Batch
from asyncbatch._cli.args import build_parser
from asyncbatch._cli.main import run
from asyncbatch.testing import FaultRule
from tests.test_cli_support import KEY, MISSING_ID, cli, simulator

pytestmark = pytest.mark.anyio

COMMANDS = (
    "status",
    "list",
    "watch",
    "results",
    "cancel",
    "delete",
    "create",
    "run",
    "simulate",
    "demo",
)
OFFLINE_COMMANDS = ("webhook-verify",)
"""Commands that talk to no API, so take no --api-key / --base-url."""


# -- help and usage -------------------------------------------------------------------


async def test_help_lists_every_command() -> None:
    """--help prints the commands and the exit statuses on stdout and exits 0."""
    outcome = await cli("--help")
    assert outcome.status == 0
    for command in COMMANDS + OFFLINE_COMMANDS:
        assert command in outcome.out
    assert "exit status" in outcome.out
    assert outcome.err == ""


@pytest.mark.parametrize("command", COMMANDS)
async def test_every_command_has_help_with_examples(command: str) -> None:
    """Each subcommand's --help shows its connection options and an example of itself."""
    outcome = await cli(command, "--help")
    assert outcome.status == 0
    assert "--api-key" in outcome.out
    assert "--base-url" in outcome.out
    assert f"asyncbatch {command}" in outcome.out.split("examples:")[1]


def test_parser_knows_exactly_the_documented_commands() -> None:
    """The grammar's subcommands are the eleven the tool documents."""
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    assert commands.choices is not None
    assert tuple(commands.choices) == COMMANDS + OFFLINE_COMMANDS


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ((), "COMMAND"),
        (("frobnicate",), "invalid choice"),
        (("status",), "required"),
        (("status", "--bogus", MISSING_ID), "unrecognized"),
        (("watch", "--interval", "-1", MISSING_ID), "--interval"),
        (("watch", "--deadline", "nan", MISSING_ID), "not a finite number"),
        (("watch", "--concurrency", "many", MISSING_ID), "not a whole number: 'many'"),
        (("list", "--status", "sleeping"), "--status"),
        (("simulate", "--item-failure-rate", "2"), "between 0 and 1"),
        (("status", "not-an-id"), "24 hexadecimal digits"),
        (("watch",), "at least one batch ID"),
    ],
)
async def test_usage_errors_give_one_line_and_status_2(argv: tuple[str, ...], needle: str) -> None:
    """Bad arguments: exit 2, one `asyncbatch: error:` line naming the problem, no usage dump."""
    outcome = await cli(*argv, base_url="http://127.0.0.1:9/v1.3")
    assert outcome.status == 2
    assert needle in outcome.error_line()
    assert len(outcome.err.splitlines()) == 1
    assert outcome.out == ""


async def test_abbreviated_api_key_option_is_refused_and_not_echoed() -> None:
    """`--api SECRET` is no abbreviation of --api-key, and the rejected value is not printed."""
    outcome = await cli("--api-key", "sk-misplaced-secret", "status", MISSING_ID)
    assert outcome.status == 2
    assert "sk-misplaced-secret" not in outcome.err
    assert "***" in outcome.error_line()


async def test_missing_api_key_is_a_usage_error() -> None:
    """No --api-key and no $TWELVELABS_API_KEY: exit 2 with a line saying how to give one."""
    outcome = await cli("status", MISSING_ID, key=None)
    assert outcome.status == 2
    assert "TWELVELABS_API_KEY" in outcome.error_line()


@pytest.mark.parametrize(
    "argv",
    [
        ("status", "{id}"),
        ("list",),
        ("cancel", "{id}"),
        ("delete", "{id}"),
        ("results", "{id}"),
        ("watch", "{id}"),
    ],
)
async def test_wrong_api_key_gives_one_line_and_status_2(argv: tuple[str, ...]) -> None:
    """A key the API refuses (401): exit 2, one error line, neither key in any output."""
    async with simulator() as sim:
        batch_id = sim.create_batch(2)["batch_id"]
        wrong = "tl-wrong-key-9f86d081884c7d65"
        args = [a.format(id=batch_id) for a in argv]
        outcome = await cli(*args, "--api-key", wrong, base_url=sim.base_url)
    assert outcome.status == 2
    assert "API key was refused" in outcome.error_line()


async def test_connection_refused_is_one_line_and_status_1() -> None:
    """Nothing listening at the base URL: exit 1 and a line saying the API cannot be reached."""
    outcome = await cli("status", MISSING_ID, "--base-url", "http://127.0.0.1:9/v1.3")
    assert outcome.status == 1
    assert "cannot reach the API" in outcome.error_line()


async def test_plain_http_to_a_remote_host_is_refused_before_sending() -> None:
    """--base-url http:// to a non-loopback host: exit 2, the key would travel in clear text."""
    outcome = await cli("list", "--base-url", "http://api.example.com/v1.3")
    assert outcome.status == 2
    assert "clear text" in outcome.error_line()


# -- status and list --------------------------------------------------------------------


async def test_status_prints_each_batch_in_human_and_json_form() -> None:
    """status shows ID, status and counters; --json prints the API's object for each ID."""
    async with simulator() as sim:
        first = sim.create_batch(3)["batch_id"]
        second = sim.create_batch(5)["batch_id"]
        human = await cli("status", first, second, base_url=sim.base_url)
        machine = await cli("status", "--json", first, second, base_url=sim.base_url)
        expected = [sim.batch(first), sim.batch(second)]
    assert human.status == machine.status == 0
    lines = human.out.splitlines()
    assert [line.split()[0] for line in lines] == [first, second]
    assert "0/3 done" in lines[0]
    # Same batch, field for field (timestamps compared as times, not as text).
    decoded = [msgspec.convert(b, Batch) for b in machine.json_lines()]
    assert decoded == [msgspec.convert(b, Batch) for b in expected]


async def test_status_reports_a_missing_batch_and_still_shows_the_others() -> None:
    """A 404 among several IDs: the others are printed, the missing one named, exit 1."""
    async with simulator() as sim:
        batch_id = sim.create_batch(1)["batch_id"]
        outcome = await cli("status", MISSING_ID, batch_id, base_url=sim.base_url)
    assert outcome.status == 1
    assert MISSING_ID in outcome.error_line()
    assert outcome.out.split()[0] == batch_id


async def test_list_filters_by_status_and_limits() -> None:
    """list --status keeps only that status, newest first; --limit stops early; --json decodes."""
    async with simulator() as sim:
        done = sim.create_batch(2)["batch_id"]
        sim.age_batch(done, 3600)
        running = [sim.create_batch(2)["batch_id"] for _ in range(3)]
        active = await cli("list", "--json", "--status", "pending", base_url=sim.base_url)
        completed = await cli("list", "--status", "completed", base_url=sim.base_url)
        limited = await cli("list", "--json", "--limit", "2", base_url=sim.base_url)
    batches = [msgspec.convert(b, Batch) for b in active.json_lines()]
    assert [b.batch_id for b in batches] == running[::-1]
    assert {b.status for b in batches} == {"pending"}
    assert [line.split()[0] for line in completed.out.splitlines()] == [done]
    assert len(limited.json_lines()) == 2


async def test_list_with_no_match_says_so_on_stderr() -> None:
    """An empty listing prints nothing on stdout and a note on stderr, exit 0."""
    async with simulator() as sim:
        outcome = await cli("list", "--status", "expired", base_url=sim.base_url)
    assert (outcome.status, outcome.out, outcome.err.strip()) == (0, "", "no batches")


# -- cancel and delete ------------------------------------------------------------------


async def test_cancel_then_cancel_a_finished_batch_is_a_conflict() -> None:
    """cancel answers canceling; canceling a completed batch is a 409: one line, exit 1."""
    async with simulator() as sim:
        running = sim.create_batch(4)["batch_id"]
        finished = sim.create_batch(1)["batch_id"]
        sim.age_batch(finished, 3600)
        canceled = await cli("cancel", "--json", running, base_url=sim.base_url)
        refused = await cli("cancel", finished, base_url=sim.base_url)
        human = await cli("cancel", running, base_url=sim.base_url)
    assert canceled.status == 0
    assert canceled.json_lines()[0]["status"] in {"canceling", "canceled"}
    assert refused.status == 1
    assert "409" in refused.error_line()
    assert "batch_completed" in refused.error_line()
    assert human.out.startswith(f"{running}: cancel requested")


async def test_delete_refuses_a_running_batch_and_deletes_a_finished_one() -> None:
    """delete of a running batch is a 409 (exit 1); of a finished one, gone afterwards (404)."""
    async with simulator() as sim:
        running = sim.create_batch(2)["batch_id"]
        finished = sim.create_batch(2)["batch_id"]
        sim.age_batch(finished, 3600)
        refused = await cli("delete", running, base_url=sim.base_url)
        deleted = await cli("delete", "--json", finished, base_url=sim.base_url)
        again = await cli("delete", finished, base_url=sim.base_url)
        remaining = sim.batch_ids()
    assert refused.status == 1
    assert "batch_not_terminal" in refused.error_line()
    assert deleted.status == 0
    assert deleted.json_lines() == [{"batch_id": finished, "deleted": True}]
    assert finished not in remaining
    assert again.status == 1
    assert "404" in again.error_line()


# -- results ----------------------------------------------------------------------------


async def test_results_stream_every_line_to_stdout() -> None:
    """results prints one JSON line per item, equal to the simulator's results; exit 0."""
    async with simulator(item_failure_rate=0.5) as sim:
        batch_id = sim.create_batch(8)["batch_id"]
        sim.age_batch(batch_id, 3600)
        outcome = await cli("results", batch_id, base_url=sim.base_url)
        expected = sim.results(batch_id)
    assert outcome.status == 0
    assert outcome.json_lines() == expected
    assert "8 result(s)" in outcome.err


async def test_results_to_a_file(tmp_path: pytest.TempPathFactory) -> None:
    """results -o FILE writes the lines there and nothing on stdout."""
    target = tmp_path / "results.jsonl"  # type: ignore[operator]
    async with simulator() as sim:
        batch_id = sim.create_batch(3)["batch_id"]
        outcome = await cli(
            "results", batch_id, "--partial", "-o", str(target), base_url=sim.base_url
        )
        expected = sim.results(batch_id)
    assert outcome.status == 0
    assert outcome.out == ""
    assert [json.loads(line) for line in target.read_text().splitlines()] == expected


async def test_results_report_a_malformed_line_and_keep_going() -> None:
    """A bad line is reported with its number on stderr, the rest still written, exit 1."""
    rule = FaultRule(rate=1.0, kinds=["malformed"], endpoints=["results"])
    async with simulator(faults=[rule]) as sim:
        batch_id = sim.create_batch(4)["batch_id"]
        sim.age_batch(batch_id, 3600)
        outcome = await cli("results", batch_id, base_url=sim.base_url)
        expected = sim.results(batch_id)
    assert outcome.status == 1
    assert outcome.json_lines() == expected
    warnings = [line for line in outcome.err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "line 2" in warnings[0]
    assert "{not json" in warnings[0]
    assert "1 malformed" in outcome.error_line()


class _Terminal(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


async def test_results_of_a_large_batch_show_progress_on_a_terminal() -> None:
    """On a terminal's stderr, a batch of 100+ items shows a running count, cleared at the end."""
    async with simulator(item_seconds=1.0) as sim:
        batch_id = sim.create_batch(120)["batch_id"]
        sim.age_batch(batch_id, 3600)
        out, err = io.StringIO(), _Terminal()
        env = {"TWELVELABS_API_KEY": KEY, "TWELVELABS_BASE_URL": sim.base_url}
        status = await run(["results", batch_id], out, err, env=env)
    assert status == 0
    assert len(out.getvalue().splitlines()) == 120
    assert "\rresults: 60/120 lines" in err.getvalue()
    assert "\rresults: 120/120 lines\r\x1b[K" in err.getvalue()
    assert "\r" not in out.getvalue()


async def test_results_of_a_missing_batch() -> None:
    """results for an unknown ID: one 404 line, nothing on stdout, exit 1."""
    async with simulator() as sim:
        outcome = await cli("results", MISSING_ID, base_url=sim.base_url)
    assert (outcome.status, outcome.out) == (1, "")
    assert "404" in outcome.error_line()


# -- create -----------------------------------------------------------------------------


def _request(n: int) -> dict[str, object]:
    return {"video": {"type": "asset_id", "asset_id": f"asset-{n}"}, "custom_id": f"c-{n}"}


async def test_create_from_json_lines_prints_the_id() -> None:
    """create FILE (JSON Lines) with --prompt makes the batch and prints only its ID."""
    text = "\n".join(json.dumps(_request(n)) for n in range(3)) + "\n"
    async with simulator() as sim:
        path = "-"
        outcome = await cli("create", path, "--prompt", "Name the speakers.", stdin=text,
                            base_url=sim.base_url)  # fmt: skip
        batch_id = outcome.out.strip()
        created = sim.batch(batch_id)
        custom_ids = [line["custom_id"] for line in sim.results(batch_id)]
    assert outcome.status == 0
    assert created["total_items"] == 3
    assert custom_ids == ["c-0", "c-1", "c-2"]


@pytest.mark.parametrize("shape", ["array", "body"])
async def test_create_accepts_an_array_or_a_whole_body(shape: str, tmp_path: object) -> None:
    """A JSON array of requests, or a create body with defaults, both make a batch (--json)."""
    requests = [_request(n) for n in range(2)]
    document: object = requests
    if shape == "body":
        document = {"requests": requests, "defaults": {"prompt": {"input_text": "Summarise."}}}
    path = tmp_path / "requests.json"  # type: ignore[operator]
    path.write_text(json.dumps(document))
    args = ["--prompt", "Summarise."] if shape == "array" else []
    async with simulator() as sim:
        outcome = await cli("create", str(path), "--json", *args, base_url=sim.base_url)
        (created,) = outcome.json_lines()
        listed = sim.batch_ids()
    assert outcome.status == 0
    assert created["total_items"] == 2
    assert [item["custom_id"] for item in created["items"]] == ["c-0", "c-1"]
    assert listed == [created["batch_id"]]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "no requests"),
        ('{"video": {}}\nnot json\n', "line 2"),
        ("[1, 2]", "request 1 is not a JSON object"),
        ('{"requests": []}', "non-empty list"),
    ],
)
async def test_create_rejects_bad_input_before_sending(text: str, needle: str) -> None:
    """Unreadable request files are usage errors (exit 2) naming the problem; no request made."""
    async with simulator() as sim:
        outcome = await cli("create", "-", stdin=text, base_url=sim.base_url)
        requests = sim.stats.requests
    assert outcome.status == 2
    assert needle in outcome.error_line()
    assert sum(requests.values()) == 0


async def test_create_with_an_invalid_request_is_a_usage_error() -> None:
    """A request the client's checks refuse (duplicate custom_id) exits 2 before sending."""
    text = json.dumps(_request(1)) + "\n" + json.dumps(_request(1)) + "\n"
    async with simulator() as sim:
        outcome = await cli("create", "-", "--prompt", "x", stdin=text, base_url=sim.base_url)
        requests = sim.stats.requests
    assert outcome.status == 2
    assert "unique" in outcome.error_line()
    assert sum(requests.values()) == 0


async def test_create_missing_file() -> None:
    """A FILE that does not exist: exit 2 and a line naming it."""
    outcome = await cli("create", "/nonexistent/requests.jsonl", base_url="http://127.0.0.1:9")
    assert outcome.status == 2
    assert "/nonexistent/requests.jsonl" in outcome.error_line()


async def test_create_without_a_prompt_is_refused_locally_with_a_hint() -> None:
    """No prompt in general mode: exit 2 before anything is sent, and the line says --prompt."""
    async with simulator() as sim:
        outcome = await cli("create", "-", stdin=json.dumps(_request(1)), base_url=sim.base_url)
        sent = sim.stats.requests.get("create", 0)
    assert outcome.status == 2
    assert "request 1 (c-1) of - has no prompt" in outcome.error_line()
    assert '--prompt "..."' in outcome.error_line()
    assert sent == 0


async def test_create_with_a_server_side_refusal_is_a_usage_error() -> None:
    """A request the API refuses with 400 (a prompt in time_based_metadata mode): exit 2."""
    async with simulator() as sim:
        outcome = await cli("create", "-", "--mode", "time_based_metadata", "--prompt", "Hi",
                            stdin=json.dumps(_request(1)), base_url=sim.base_url)  # fmt: skip
    assert outcome.status == 2
    assert "(400)" in outcome.error_line()


async def test_key_on_the_command_line_wins_over_the_environment() -> None:
    """--api-key is used instead of $TWELVELABS_API_KEY (a wrong env key does not matter)."""
    async with simulator() as sim:
        batch_id = sim.create_batch(1)["batch_id"]
        outcome = await cli("status", batch_id, "--api-key", KEY, key="tl-env-key-wrong-123456",
                            base_url=sim.base_url)  # fmt: skip
    assert outcome.status == 0
    assert outcome.out.startswith(batch_id)
