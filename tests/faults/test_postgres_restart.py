"""PostgreSQL restarted while the serving app takes /predict traffic (issue 12, §5).

The prediction log of a real detached serving app (its own Ray) is on a real PostgreSQL: a
private cluster this test creates in a tmp dir (initdb, pg_ctl) and removes, so stopping it
disturbs nobody. Load threads post /predict without pause while the server goes down for
DOWN_S seconds and is started again on the same data dir: stopped with `pg_ctl -m fast`
(every connection cut), or its postmaster SIGKILLed (pid from postmaster.pid; the restart
recovers from the WAL). No /predict may fail; the rows of the answers given while it was down
are held in the ingress's queue and written after the restart; in the end the log holds one
champion row for every request answered, counted by request id: none lost, none twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests_support import PostgresCluster, detached_serving_app, serving_tests

from mlops_assets.lifecycle.store import LifecycleStore
from mlops_assets.lifecycle.store.tables import prediction_log_table

Stream = serving_tests("test_hot_swap").Stream  # CLIENTS threads posting /predict
wait_until = serving_tests("serving_support").wait_until

DOWN_S = 4.0
BEFORE = 100  # answers before the restart, and again after it


@pytest.fixture
def postgres() -> Iterator[PostgresCluster]:
    try:
        cluster = PostgresCluster()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        yield cluster.init()
    finally:
        cluster.destroy()


def logged(url: str, between: tuple[datetime, datetime] | None = None) -> tuple[int, int]:
    """(champion rows, distinct request ids) in the prediction log, optionally timed between."""
    t = prediction_log_table
    q = sa.select(sa.func.count(), sa.func.count(sa.distinct(t.c.request_id)))
    q = q.where(t.c.role == "champion")
    if between is not None:
        q = q.where(t.c.time.between(*between))
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows, ids = conn.execute(q).one()
    finally:
        engine.dispose()
    return rows, ids


@pytest.mark.parametrize("how", ["pg_ctl-fast", "kill-9"])
def test_a_postgres_restart_fails_no_request_and_loses_no_row(
    postgres: PostgresCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    LifecycleStore(postgres.url).close()  # the schema, as the app would create it
    with detached_serving_app(tmp_path / "proj", monkeypatch, lifecycle_url=postgres.url) as (
        _,
        _,
        info,
    ):
        with Stream(info.url) as stream:
            assert wait_until(lambda: len(stream.results) >= BEFORE, timeout_s=120)
            assert wait_until(lambda: logged(postgres.url)[0] > 0, timeout_s=30)
            down_at = time.monotonic()
            if how == "kill-9":
                postgres.kill_9()
            else:
                postgres.stop("fast")  # every connection is cut
            stopped = datetime.now(UTC)  # no server runs from here ...
            time.sleep(DOWN_S)
            restarting = datetime.now(UTC)  # ... to here
            postgres.start()
            up_at = time.monotonic()
            assert wait_until(lambda: stream.count_after(up_at) >= BEFORE, timeout_s=120)
        answered = len(stream.results)
        # Every answer's row reaches the store: held rows are retried after the back-off.
        assert wait_until(lambda: logged(postgres.url)[1] >= answered, timeout_s=60)
        time.sleep(1.0)  # nothing more may arrive: no row twice
        rows, ids = logged(postgres.url)
        during = sum(1 for sent, _, _ in stream.results if down_at <= sent <= up_at)
        held, _ = logged(postgres.url, between=(stopped, restarting))

    print(
        f"postgres restart ({how}): {answered} requests, {during} answered while it was down "
        f"({up_at - down_at:.1f} s); {rows} rows logged, {held} of them held through the outage"
    )
    assert stream.errors == []
    assert {code for _, code, _ in stream.results} == {200}
    assert during >= 20  # traffic really went on while the store was down
    assert (rows, ids) == (answered, answered)
    # Rows of answers given while no server ran: held, and written after the restart.
    assert held >= 20
