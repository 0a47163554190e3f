"""Request validation and the prediction log writer, without Ray (fast, pure)."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_assets.lifecycle.classes import normalise_label
from mlops_assets.lifecycle.schema import FeatureSpec, InputSchema
from serving.predlog import PredictionLogWriter, StoreUnavailable
from serving.validation import MAX_REPORTED_ERRORS, validate_batch, validate_records

SCHEMA = InputSchema(
    target="target",
    classes=["False", "True"],
    features=[
        FeatureSpec(name="age", type="number", min=18, max=100),
        FeatureSpec(name="spend", type="number", nullable=False),
        FeatureSpec(
            name="contract",
            type="category",
            nullable=False,
            categories=["monthly", "yearly"],
            allow_unknown=False,
        ),
        FeatureSpec(name="region", type="category", categories=["north", "south"]),
        FeatureSpec(name="paperless", type="binary"),
    ],
)
GOOD = {"age": 30, "spend": 12.5, "contract": "monthly", "region": "north", "paperless": "yes"}


def check(record: Any) -> tuple[list[str], list[str]]:
    out = validate_records(SCHEMA, [record], "features", single=True)
    return [e.field for e in out.errors], [w.kind for w in out.warnings]


def test_a_good_record_passes_clean() -> None:
    out = validate_records(SCHEMA, [GOOD], "features", single=True)
    assert out.ok and out.warnings == []
    assert out.records == [GOOD]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"age": "thirty"}, "features.age"),
        ({"age": True}, "features.age"),
        ({"age": math.nan}, "features.age"),
        ({"age": -math.inf}, "features.age"),
        ({"age": [1]}, "features.age"),
        ({"spend": None}, "features.spend"),
        ({"spend": -math.inf}, "features.spend"),
        ({"spend": math.inf}, "features.spend"),
        ({"contract": "weekly"}, "features.contract"),
        ({"contract": 2.5}, "features.contract"),
        ({"contract": None}, "features.contract"),
        ({"paperless": "maybe"}, "features.paperless"),
        ({"paperless": 2}, "features.paperless"),
        ({"paperless": {}}, "features.paperless"),
    ],
)
def test_invalid_values_name_the_field(change: dict[str, Any], field: str) -> None:
    errors, _ = check(GOOD | change)
    assert errors == [field]


def test_missing_feature_is_an_error_even_when_nullable() -> None:
    record = dict(GOOD)
    del record["age"]
    assert check(record)[0] == ["features.age"]
    assert check(GOOD | {"age": None}) == ([], [])


def test_tolerated_oddities_are_warnings() -> None:
    errors, kinds = check(GOOD | {"age": 150, "region": "east", "other": 1})
    assert errors == []
    assert sorted(kinds) == ["out_of_range", "unknown_category", "unknown_feature"]
    out = validate_records(SCHEMA, [GOOD | {"x1": 1, "x2": 2}], "features", single=True)
    assert out.warning_counts == {("(unknown)", "unknown_feature"): 2}


def test_binary_accepts_bools_numbers_and_trained_strings() -> None:
    for value in (True, False, 0, 1, "Yes", "false", "Y"):
        assert check(GOOD | {"paperless": value})[0] == []
    out = validate_records(
        SCHEMA,
        [GOOD | {"paperless": "opted-in"}],
        "features",
        single=True,
        binary_strings={"paperless": {"opted-in", "opted-out"}},
    )
    assert out.ok


def test_batch_fields_carry_the_row_index_and_errors_are_capped() -> None:
    rows: list[Any] = [GOOD, "not a dict", GOOD | {"age": "x"}]
    out = validate_records(SCHEMA, rows, "instances")
    assert [e.field for e in out.errors] == ["instances[1]", "instances[2].age"]
    many = validate_records(SCHEMA, [{}] * 50, "instances")
    assert len(many.errors) == MAX_REPORTED_ERRORS


# Values a client might send for any feature: good ones, odd ones and wrong ones.
ANY_VALUE = st.one_of(
    st.integers(-10, 200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["monthly", "yearly", "weekly", "north", "south", "east", "yes", "no", ""]),
    st.booleans(),
    st.none(),
    st.just([1]),
)
RECORD = st.fixed_dictionaries(
    {name: ANY_VALUE for name in SCHEMA.names},
    optional={"extra": ANY_VALUE},
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(RECORD, st.builds(lambda: GOOD)), min_size=1, max_size=6))
def test_the_columnar_pass_gives_the_careful_verdict(records: list[dict[str, Any]]) -> None:
    careful = validate_records(SCHEMA, records, "instances")
    fast = validate_batch(SCHEMA, records, "instances")
    assert [e.field for e in fast.errors] == [e.field for e in careful.errors]
    assert fast.warning_counts == careful.warning_counts
    if careful.ok:
        assert fast.n == len(records)
        rows = [
            dict(zip(fast.columns, values, strict=True))
            for values in zip(*fast.columns.values(), strict=True)
        ]
        assert rows == careful.records


def test_the_columnar_pass_hands_back_columns_in_schema_order() -> None:
    rows = [GOOD, GOOD | {"age": 40.5, "paperless": True}]
    out = validate_batch(SCHEMA, rows, "instances")
    assert out.ok and out.n == 2
    assert list(out.columns) == SCHEMA.names
    assert out.columns["age"] == [30, 40.5]
    assert out.columns["paperless"] == ["yes", True]


def test_feedback_labels_map_onto_classes() -> None:
    classes = ["False", "True"]
    assert [normalise_label(v, classes) for v in (1, "0", True, "yes", "True")] == [
        "True",
        "False",
        "True",
        "True",
        "True",
    ]
    assert normalise_label("churn", ["churn", "stay"]) == "churn"
    assert normalise_label(" x ", None) == "x"


class Sink:
    """A sink recording batches; can be told to fail."""

    def __init__(self, fail_times: int = 0) -> None:
        self.batches: list[list[Any]] = []
        self.fail_times = fail_times
        self.threads: set[str] = set()

    def __call__(self, rows: list[Any]) -> int:
        self.threads.add(threading.current_thread().name)
        if self.fail_times:
            self.fail_times -= 1
            raise OSError("store down")
        self.batches.append(list(rows))
        return len(rows)


def test_writer_batches_off_the_event_loop_and_flushes() -> None:
    sink = Sink()
    written: list[int] = []

    async def run() -> None:
        writer = PredictionLogWriter(sink, batch=3, flush_s=0.05, on_written=written.append)
        writer.start()
        assert writer.submit(list(range(7))) == 0
        await writer.flush()
        assert writer.pending == 0
        writer.submit([7])
        await asyncio.sleep(0.3)  # the periodic flush picks up a partial batch
        await writer.close()

    asyncio.run(run())
    assert [len(b) for b in sink.batches] == [3, 3, 1, 1]
    assert sum(written) == 8
    assert threading.main_thread().name not in sink.threads


def test_writer_holds_rows_while_the_store_is_down_and_drops_only_past_its_bound() -> None:
    sink = Sink(fail_times=5)  # two flushes of 2 attempts each fail, then one more attempt
    dropped: list[int] = []

    async def run() -> None:
        writer = PredictionLogWriter(
            sink,
            batch=10,
            flush_s=0.01,
            max_queue=5,
            retries=1,
            max_backoff_s=0.05,
            on_dropped=dropped.append,
        )
        writer.start()
        assert writer.submit(list(range(8))) == 3  # over the bound: counted at once
        with pytest.raises(StoreUnavailable):
            await writer.flush()
        # Held, not dropped: still queued, in order, and the writer says the store is down.
        assert writer.pending == 5 and writer.store_down
        assert writer.submit([99]) == 1  # the queue is still full
        # The background flusher backs off, retries, and gets everything through.
        for _ in range(200):
            if writer.written == 5:
                break
            await asyncio.sleep(0.02)
        assert not writer.store_down
        await writer.close()
        assert (writer.written, writer.dropped) == (5, 4)

    asyncio.run(run())
    assert sum(dropped) == 4
    assert [row for batch in sink.batches for row in batch] == [0, 1, 2, 3, 4]


def test_writer_drops_what_the_store_still_refuses_at_shutdown() -> None:
    sink = Sink(fail_times=1_000)

    async def run() -> PredictionLogWriter:
        writer = PredictionLogWriter(sink, batch=2, flush_s=10, retries=0)
        writer.start()
        writer.submit([1, 2, 3])
        await writer.close()  # no exception: the rows are dropped and counted
        return writer

    writer = asyncio.run(run())
    assert (writer.written, writer.dropped, writer.pending) == (0, 3, 0)
    assert sink.batches == []


def test_writer_flush_blocking_for_shutdown() -> None:
    sink = Sink()
    writer = PredictionLogWriter(sink, batch=2)
    writer.submit([1, 2, 3])
    writer.flush_blocking()
    assert sink.batches == [[1, 2], [3]]
    assert writer.submit([4]) == 1  # closed: later rows are counted as dropped
