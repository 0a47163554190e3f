"""Retention prunes every role by age and keeps what an open shadow test or probation needs.

Real MLflow registry (SQLite) and lifecycle store, through `run_retention`.
"""

from __future__ import annotations

from datetime import timedelta

import test_automation as automation
from test_automation import World, rows

from mlops_assets.lifecycle.records import utcnow
from mlops_assets.lifecycle.retention import retention_windows, run_retention
from mlops_assets.lifecycle.states import Alias

# The world of test_automation: retention 90 s, probation 1 d, its own registered model.
mlflow_uri = automation.mlflow_uri
world = automation.world


def left(w: World) -> set[tuple[str, str, str]]:
    return {(p.request_id, p.role, p.model_version) for p in w.store.predictions()}


def test_an_open_shadow_test_keeps_both_sides_since_it_started(world: World):
    w = world
    t0 = utcnow() - timedelta(minutes=10)
    v1 = w.bootstrap()
    v2 = w.start_shadow(v1, t0)
    before, during = t0 - timedelta(minutes=5), t0 + timedelta(minutes=1)
    w.store.log_predictions(
        rows(w, v1, "champion", ["before"], ["True"], before, 5.0)
        + rows(w, v2, "shadow", ["before"], ["True"], before, 5.0)
        + rows(w, v1, "champion", ["paired"], ["True"], during, 5.0)
        + rows(w, v2, "shadow", ["paired"], ["True"], during, 5.0)
    )
    # Another model in the same store is not this model's retention's to prune.
    w.store.log_predictions(
        [
            p.model_copy(update={"model_name": "other-model", "request_id": "foreign"})
            for p in rows(w, v1, "champion", ["x"], ["True"], before, 5.0)
        ]
    )
    report = run_retention(w.lc, now=utcnow())
    assert report.predictions_deleted == 2
    assert left(w) == {
        ("paired", "champion", v1),
        ("paired", "shadow", v2),
        ("foreign", "champion", v1),
    }
    shadow_windows = [win for win in report.kept_windows if "shadow test" in win.reason]
    assert {(win.role, win.model_version) for win in shadow_windows} == {
        ("shadow", v2),
        ("champion", None),
    }
    assert all(win.since == t0 for win in shadow_windows)

    # The test closes: its rows age out like any others.
    w.store.close_shadow_test(v2, "closed-by-the-test", model_name=w.name)
    report = run_retention(w.lc, now=utcnow())
    assert report.predictions_deleted == 2
    assert left(w) == {("foreign", "champion", v1)}


def test_a_champion_in_probation_keeps_its_rows_until_probation_ends(world: World):
    w = world
    v1 = w.bootstrap()
    (move,) = w.store.alias_history(w.name, Alias.CHAMPION.value)
    promoted = move.time
    w.store.log_predictions(
        rows(w, v1, "champion", ["before"], ["True"], promoted - timedelta(minutes=1), 5.0)
        + rows(w, v1, "champion", ["during"], ["True"], promoted + timedelta(seconds=10), 5.0)
    )
    now = promoted + timedelta(minutes=3)  # cutoff: 90 s later than "during"
    (window,) = retention_windows(w.lc, now)
    assert (window.role, window.model_version, window.since) == ("champion", v1, promoted)
    report = run_retention(w.lc, now=now)
    assert report.predictions_deleted == 1
    assert left(w) == {("during", "champion", v1)}

    after = promoted + w.settings.policy.probation_period + timedelta(minutes=1)
    assert retention_windows(w.lc, after) == []
    assert run_retention(w.lc, now=after).predictions_deleted == 1
    assert left(w) == set()
