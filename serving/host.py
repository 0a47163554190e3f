"""`ModelHost`: one served model version, loaded beside the old one and swapped atomically.

No Ray here. The ingress hosts the champion in its own process (one hop less per request:
the answer never crosses an actor call), and each shadow's `ModelServer` replica hosts its
shadow. Both apply a `SlotConfig` through `reconfigure`, which loads the new bundle in a
thread while the old one keeps answering, then swaps one object, so a hot swap never fails a
request.
"""

import asyncio
import logging
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_assets.lifecycle.digests import BundleMismatch, verify_bundle
from serving.config import SlotConfig
from serving.resolve import ModelRef, download_bundle
from serving.validation import validate_batch

log = logging.getLogger(__name__)


class Loaded:
    """A loaded version: swapped in as one object so a request never sees half of two."""

    def __init__(self, ref: ModelRef, predictor: Any, path: Path) -> None:
        self.ref = ref
        self.predictor = predictor
        self.path = path
        self.loaded_at = datetime.now(UTC).isoformat()
        self.binary_strings = {
            f.name: set(f.str2bool) for f in predictor.manifest.input_features if f.str2bool
        }
        self.features = list(predictor.schema.names)


def _probe_record(schema: Any) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for spec in schema.features:
        if spec.type == "number":
            row[spec.name] = spec.min if spec.min is not None else 0.0
        elif spec.type == "category":
            row[spec.name] = (spec.categories or ["x"])[0]
        else:
            row[spec.name] = False
    return row


def answer(
    loaded: Loaded, records: list[Any], prefix: str, single: bool, extra_s: float = 0.0
) -> dict[str, Any]:
    """Validate and predict one request; `model_ms` is the time it took here."""
    started = time.perf_counter()
    predictor = loaded.predictor
    result = validate_batch(
        predictor.schema, records, prefix, single=single, binary_strings=loaded.binary_strings
    )
    if not result.ok:
        return {
            "status": "invalid",
            "version": loaded.ref.version,
            "errors": [e.model_dump() for e in result.errors],
        }
    batch = predictor.predict(result.columns)
    return {
        "status": "ok",
        "version": loaded.ref.version,
        "labels": batch.labels,
        "probabilities": batch.probabilities,
        "classes": batch.classes,
        "features": loaded.features,
        "warnings": [w.model_dump() for w in result.warnings],
        "warning_counts": result.warning_counts,
        "model_ms": (extra_s + time.perf_counter() - started) * 1000,
    }


class ModelHost:
    """The version a slot serves, its last load error, and the swap that changes it."""

    def __init__(self, slot: str, tracking_uri: str, model_name: str) -> None:
        self.slot = slot
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.loaded: Loaded | None = None
        self.target: ModelRef | None = None
        self.load_error: str | None = None
        # The last version refused because its bundle differs from the registered one.
        self.mismatch: dict[str, str] | None = None
        self._cache = Path(tempfile.mkdtemp(prefix=f"mlops-{slot}-"))
        self._lock = asyncio.Lock()

    async def reconfigure(self, cfg: SlotConfig) -> None:
        """Load the version `cfg` names beside the current one, then swap (or empty the slot)."""
        async with self._lock:
            self.target = cfg.model
            current = self.loaded.ref if self.loaded else None
            if cfg.model == current:
                return
            if cfg.model is None:
                old, self.loaded, self.load_error = self.loaded, None, None
                self._discard(old)
                log.info("%s: no version to serve", self.slot)
                return
            try:
                loaded = await asyncio.to_thread(self._load, cfg.model)
            except BundleMismatch as exc:  # not what was registered: never load it
                self.load_error = f"version {cfg.model.version}: bundle mismatch: {exc}"[:1000]
                self.mismatch = {"version": cfg.model.version, "file": exc.file or "?"}
                log.error("%s: refusing version %s: %s", self.slot, cfg.model.version, exc)
                return
            except Exception as exc:  # keep serving the old version; report why
                self.load_error = f"version {cfg.model.version}: {exc!r}"[:1000]
                log.exception("%s: cannot load version %s", self.slot, cfg.model.version)
                return
            old, self.loaded, self.load_error = self.loaded, loaded, None
            self.mismatch = None
            self._discard(old)
            log.info(
                "%s: now serving version %s (%s)",
                self.slot,
                cfg.model.version,
                loaded.predictor.mode,
            )

    def _load(self, ref: ModelRef) -> Loaded:
        from mlops_assets.lifecycle.bundle import load_bundle

        dest = Path(tempfile.mkdtemp(prefix=f"v{ref.version}-", dir=self._cache))
        path = download_bundle(self.tracking_uri, ref.run_id, dest)
        try:
            if verify_bundle(path, ref.bundle_sha256) is None:
                log.warning("version %s has no bundle digests: loaded unverified", ref.version)
        except BundleMismatch:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        predictor = load_bundle(path, num_threads=1)
        probe = [_probe_record(predictor.schema)]
        for _ in range(3):  # TorchScript optimises on its first calls; pay that here
            predictor.predict(probe)
        return Loaded(ref, predictor, dest)

    @staticmethod
    def _discard(old: Loaded | None) -> None:
        if old is not None:
            shutil.rmtree(old.path, ignore_errors=True)

    def unavailable(self) -> dict[str, Any]:
        """The answer of an empty slot."""
        return {"status": "unavailable", "slot": self.slot, "error": self.load_error}

    def info(self, fault: str | None = None) -> dict[str, Any]:
        """What this slot serves right now."""
        loaded = self.loaded
        base: dict[str, Any] = {
            "slot": self.slot,
            "model_name": self.model_name,
            "loaded": loaded is not None,
            "target_version": self.target.version if self.target else None,
            "load_error": self.load_error,
            "bundle_mismatch": self.mismatch,
            "fault": fault,
            "pid": os.getpid(),
            "nice": os.nice(0),
        }
        if loaded is None:
            return base
        predictor = loaded.predictor
        base.update(
            version=loaded.ref.version,
            run_id=loaded.ref.run_id,
            alias=loaded.ref.alias,
            mode=predictor.mode,
            fast_path_error=predictor.manifest.fast_path_error,
            classes=predictor.classes,
            schema=predictor.schema.model_dump(mode="json"),
            loaded_at=loaded.loaded_at,
        )
        return base

    def close(self) -> None:
        """Remove the downloaded bundles."""
        shutil.rmtree(self._cache, ignore_errors=True)
