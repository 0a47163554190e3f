"""`manager.reconcile` runs under the transition lock, like every registry move (issue 12)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mlops_assets.lifecycle import manager
from mlops_assets.lifecycle.context import Lifecycle
from mlops_assets.lifecycle.store import LockBusy
from mlops_assets.settings import load_settings


class _RecordingRegistry:
    """Stands in for the MLflow registry only; the lock under test is the real store's."""

    def __init__(self, lc: Lifecycle) -> None:
        self.lc = lc
        self.holders: list[str | None] = []

    def reconcile(self) -> list:
        held = self.lc.store.lock_holder(f"transition:{self.lc.model_name}")
        self.holders.append(held.owner if held else None)
        return []


@pytest.fixture
def lc(make_project: Callable[..., Path]) -> Lifecycle:
    """A lifecycle context on a fresh project (the MLflow client is never called here)."""
    settings = load_settings(make_project() / "config" / "config.yaml")
    ctx = Lifecycle.open(settings)
    yield ctx
    ctx.close()


def test_reconcile_holds_the_transition_lock(lc: Lifecycle) -> None:
    recording = _RecordingRegistry(lc)
    lc._registry = recording  # type: ignore[assignment]
    assert manager.reconcile(lc) == []
    assert recording.holders == ["reconcile"]
    assert lc.store.lock_holder(f"transition:{lc.model_name}") is None  # released afterwards


def test_reconcile_waits_for_a_move_in_progress(lc: Lifecycle) -> None:
    recording = _RecordingRegistry(lc)
    lc._registry = recording  # type: ignore[assignment]
    lock = lc.store.acquire_lock(f"transition:{lc.model_name}", owner="decision-in-progress")
    try:
        with (
            pytest.raises(LockBusy, match="decision-in-progress"),
            lc.store.transition_lock(lc.model_name, owner="probe", wait=0.5),
        ):
            pass
        # reconcile itself must not run beside the holder either.
        original = lc.store.transition_lock

        def short_wait(model_name: str, owner: str, **kwargs):
            return original(model_name, owner, wait=0.5)

        lc.store.transition_lock = short_wait  # type: ignore[method-assign]
        with pytest.raises(LockBusy):
            manager.reconcile(lc)
        assert recording.holders == []
    finally:
        lc.store.release_lock(lock)
