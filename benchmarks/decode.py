"""Nanoseconds per status-body decode: our msgspec decoder, json.loads, the SDK's pydantic model.

Run: ``.venv/bin/python -m benchmarks.decode`` (``--help`` for sizes).

Each contender turns the same bytes (reference §8.2) into its answer, timed
with `timeit`: the number of calls per repeat is calibrated so that one repeat
lasts about ``--repeat-time`` seconds, and the table shows the median ns per
call over ``--repeats`` repeats and its ratio to
`asyncbatch._models.batch_decoder`.
For the SDK there are two rows: the model's own fastest path
(``model_validate_json``) and what ``client.analyze_async.batches.retrieve``
really runs on a body (``parse_obj_as`` over ``json.loads``, as httpx's
``response.json()`` hands it over).
"""

from __future__ import annotations

import argparse
import json
import time
import timeit
from collections.abc import Callable, Sequence

import msgspec
from twelvelabs.core.pydantic_utilities import parse_obj_as
from twelvelabs.types.analyze_batch_status_response import AnalyzeBatchStatusResponse

from asyncbatch._models import batch_decoder

from ._bodies import COMPLETED_BODY, PROCESSING_BODY
from ._report import machine_line, median, ratio, table

OURS = "asyncbatch batch_decoder"
BODIES = {"processing": PROCESSING_BODY, "completed + webhook": COMPLETED_BODY}


def _sdk_model(body: bytes) -> object:
    return AnalyzeBatchStatusResponse.model_validate_json(body)


def _sdk_retrieve_path(body: bytes) -> object:
    return parse_obj_as(AnalyzeBatchStatusResponse, json.loads(body))


CONTENDERS: dict[str, Callable[[bytes], object]] = {
    OURS: batch_decoder.decode,
    "msgspec.json.decode (untyped)": msgspec.json.decode,
    "json.loads (untyped)": json.loads,
    "SDK model_validate_json": _sdk_model,
    "SDK retrieve path (parse_obj_as)": _sdk_retrieve_path,
}


def check_agreement() -> None:
    """Every typed contender reads the same counters from every body, or the race is void."""
    for body in BODIES.values():
        ours = batch_decoder.decode(body)
        for decode in (_sdk_model, _sdk_retrieve_path):
            theirs = decode(body)
            assert getattr(theirs, "ready_items", None) == ours.ready_items
            assert str(getattr(theirs, "status", None)) == ours.status


def ns_per_call(
    decode: Callable[[bytes], object], body: bytes, repeat_time: float, repeats: int
) -> float:
    """Median over ``repeats`` of mean ns per call; a repeat lasts about ``repeat_time`` s."""
    # CPU time, not wall time: a busy machine preempts us, which must not count.
    timer = timeit.Timer(lambda: decode(body), timer=time.process_time)
    number = 1
    while (elapsed := timer.timeit(number)) < repeat_time / 10:
        number *= 10
    number = max(1, round(number * repeat_time / elapsed))
    return median(t / number * 1e9 for t in timer.repeat(repeat=repeats, number=number))


def main(argv: Sequence[str] | None = None) -> dict[tuple[str, str], float]:
    """Parse the command line, run, print the table; returns ns per call by (body, contender)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode", description=__doc__)
    parser.add_argument(
        "--repeat-time", type=float, default=0.1, help="seconds per repeat (default 0.1)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="repeats (default 7; median shown)")
    args = parser.parse_args(argv)
    check_agreement()
    print(machine_line())
    print(f"about {args.repeat_time} s per repeat, repeats: {args.repeats}")
    figures: dict[tuple[str, str], float] = {}
    for body_name, body in BODIES.items():
        for name, decode in CONTENDERS.items():
            figures[(body_name, name)] = ns_per_call(decode, body, args.repeat_time, args.repeats)
    rows = [
        [
            name,
            body_name,
            f"{figures[(body_name, name)]:.0f}",
            f"{figures[(body_name, OURS)]:.0f}",
            ratio(figures[(body_name, name)], figures[(body_name, OURS)]),
        ]
        for body_name in BODIES
        for name in CONTENDERS
    ]
    headers = ["decoder", "body", "ns/decode", f"{OURS} ns", "ratio to ours"]
    print(table("Status-body decode cost (median over repeats)", headers, rows))
    return figures


if __name__ == "__main__":
    main()
