"""The store's exceptions."""

from __future__ import annotations

from datetime import datetime


class StoreError(RuntimeError):
    """The lifecycle store cannot be used as asked (bad URL, newer schema, conflict)."""


class DecisionConflict(StoreError):
    """A decision id is already stored with different content (records are append-only)."""


class LockBusy(TimeoutError):
    """The transition lock is held by someone else and did not free up in time."""

    def __init__(self, name: str, owner: str | None, expires_at: datetime | None, waited: float):
        self.name = name
        self.owner = owner
        self.expires_at = expires_at
        holder = f"held by {owner!r} until {expires_at.isoformat()}" if owner else "held"
        super().__init__(
            f"transition lock for {name!r} is {holder}; gave up after {waited:g} s "
            "(another lifecycle cycle is moving aliases; retry later)"
        )


class LockLost(StoreError):
    """Our transition lock expired and someone else took it over."""
