"""Columnar prediction-log entries: encoded off the request path, stored, read back intact."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from mlops_assets.lifecycle.store import CURRENT_SCHEMA_VERSION, LifecycleStore, PredictionRow
from serving.predlog import LogEntry, PredictionLogWriter, StoreUnavailable, encode_entries


def entries(when: datetime) -> list[LogEntry]:
    records = [{"age": 30, "plan": "basic"}, {"age": 41.5, "plan": "pro"}]
    return [
        LogEntry(
            role="champion",
            version="1",
            time=when,
            request_ids=["a", "b"],
            records=records,
            latency_ms=0.8,
            labels=["True", "False"],
            probabilities=np.array([[0.25, 0.75], [0.9, 0.1]]),
            classes=["False", "True"],
        ),
        LogEntry(
            role="shadow",
            version="2",
            time=when + timedelta(milliseconds=40),
            request_ids=["a", "b"],
            records=records,
            latency_ms=2000.0,
            error="timeout after 2s",
        ),
    ]


@pytest.fixture
def store(store_url: str) -> Iterator[LifecycleStore]:
    with LifecycleStore(store_url) as s:
        yield s


def test_entries_round_trip_through_the_store(store: LifecycleStore) -> None:
    when = datetime(2026, 11, 30, 12, 0, 0, 5, tzinfo=UTC)
    rows = encode_entries(entries(when), "churn")
    assert len(rows) == 4
    assert store.append_prediction_rows(rows) == 4
    assert store.append_prediction_rows(rows) == 0  # a retried flush never doubles rows

    got = {(p.request_id, p.role): p for p in store.predictions(model_name="churn")}
    champ = got[("a", "champion")]
    assert champ.time == when
    assert champ.inputs == {"age": 30, "plan": "basic"}
    assert champ.prediction == "True"
    assert champ.probabilities == {"False": 0.25, "True": 0.75}
    assert champ.latency_ms == pytest.approx(0.8)
    shadow = got[("b", "shadow")]
    assert shadow.prediction is None and shadow.probabilities is None
    assert shadow.error == "timeout after 2s"
    assert shadow.inputs == {"age": 41.5, "plan": "pro"}
    # Time filters see the hot-path rows like any other.
    assert {p.role for p in store.predictions(since=when + timedelta(milliseconds=1))} == {"shadow"}


def test_the_model_api_and_the_hot_path_store_the_same_thing(store: LifecycleStore) -> None:
    when = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    store.log_predictions(
        [
            PredictionRow(
                request_id="x",
                time=when,
                role="champion",
                model_name="churn",
                model_version="1",
                inputs={"age": 30},
                prediction="True",
                probabilities={"False": 0.4, "True": 0.6},
                latency_ms=1.0,
            )
        ]
    )
    entry = LogEntry(
        role="champion",
        version="1",
        time=when,
        request_ids=["y"],
        records=[{"age": 30}],
        latency_ms=1.0,
        labels=["True"],
        probabilities=[[0.4, 0.6]],
        classes=["False", "True"],
    )
    store.append_prediction_rows(encode_entries([entry], "churn"))
    x, y = sorted(store.predictions(model_name="churn"), key=lambda p: p.request_id)
    assert x.model_dump(exclude={"request_id"}) == y.model_dump(exclude={"request_id"})


def test_inputs_a_strict_encoder_refuses_are_still_logged() -> None:
    entry = LogEntry(
        role="champion",
        version="1",
        time=datetime.now(UTC),
        request_ids=["z"],
        records=[{"big": 2**70}],
        latency_ms=1.0,
        error="invalid",
    )
    (row,) = encode_entries([entry], "churn")
    assert row[5] == '{"big": 1180591620717411303424}'


def _prediction_indexes(store: LifecycleStore) -> dict[str, list[str]]:
    return {
        ix["name"]: ix["column_names"]
        for ix in sa.inspect(store.engine).get_indexes("prediction_log")
    }


def test_v4_drops_the_request_id_index_and_lookups_still_work(store_url: str) -> None:
    when = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    with LifecycleStore(store_url, schema_version=3) as old:
        assert _prediction_indexes(old)["ix_prediction_log_request_id"] == ["request_id"]
        assert old.append_prediction_rows(encode_entries(entries(when), "churn")) == 4

    with LifecycleStore(store_url) as new:
        assert new.schema_version == CURRENT_SCHEMA_VERSION >= 4
        indexes = _prediction_indexes(new)
        assert "ix_prediction_log_request_id" not in indexes
        assert "ix_prediction_version_role_time" in indexes
        # The unique key still starts with request_id, so joins and lookups keep an index.
        assert new.append_prediction_rows(encode_entries(entries(when), "churn")) == 0
        got = new.predictions(model_name="churn", request_ids=["a"])
        assert sorted(p.role for p in got) == ["champion", "shadow"]


def test_the_writer_holds_rows_through_a_store_outage(store_url: str) -> None:
    """Fault injection on a real store: the log table vanishes for a while, nothing is lost."""
    when = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def ddl(sql: str) -> None:
        with store.engine.begin() as conn:
            conn.exec_driver_sql(sql)

    with LifecycleStore(store_url) as store:

        def sink(items: list[LogEntry]) -> int:
            return store.append_prediction_rows(encode_entries(items, "churn"))

        async def run() -> PredictionLogWriter:
            writer = PredictionLogWriter(
                sink, batch=100, flush_s=0.02, retries=0, max_backoff_s=0.1, size=len
            )
            writer.start()
            ddl("ALTER TABLE prediction_log RENAME TO prediction_log_away")
            try:
                assert writer.submit(entries(when)) == 0
                with pytest.raises(StoreUnavailable):
                    await writer.flush()
                await asyncio.sleep(0.2)  # the background flusher fails and backs off too
                assert writer.pending == 4 and writer.store_down and writer.dropped == 0
            finally:
                ddl("ALTER TABLE prediction_log_away RENAME TO prediction_log")
            for _ in range(250):
                if writer.written == 4:
                    break
                await asyncio.sleep(0.02)
            await writer.close()
            return writer

        writer = asyncio.run(run())
        assert (writer.written, writer.dropped, writer.store_down) == (4, 0, False)
        got = sorted((p.request_id, p.role) for p in store.predictions(model_name="churn"))
    assert got == [("a", "champion"), ("a", "shadow"), ("b", "champion"), ("b", "shadow")]


def test_a_row_the_store_refuses_never_blocks_the_rows_behind_it(store_url: str) -> None:
    """A bad entry (probabilities that do not match its classes) is dropped on its own."""
    when = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    good = entries(when)
    bad = LogEntry(
        role="champion",
        version="1",
        time=when,
        request_ids=["c"],
        records=[{"age": 50, "plan": "pro"}],
        latency_ms=1.0,
        labels=["True"],
        probabilities=np.array([[0.1, 0.2, 0.7]]),  # three numbers for two classes
        classes=["False", "True"],
    )
    with LifecycleStore(store_url) as store:

        def sink(items: list[LogEntry]) -> int:
            return store.append_prediction_rows(encode_entries(items, "churn"))

        async def run() -> PredictionLogWriter:
            writer = PredictionLogWriter(sink, batch=100, flush_s=10, size=len)
            writer.start()
            assert writer.submit([good[0], bad, good[1]]) == 0
            await writer.flush()  # no StoreUnavailable: the store itself is fine
            await writer.close()
            return writer

        writer = asyncio.run(run())
        assert (writer.written, writer.dropped, writer.store_down) == (4, 1, False)
        got = sorted((p.request_id, p.role) for p in store.predictions(model_name="churn"))
    assert got == [("a", "champion"), ("a", "shadow"), ("b", "champion"), ("b", "shadow")]
