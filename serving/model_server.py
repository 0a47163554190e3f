"""`ModelServer`: one model deployment per role, serving the version its registry alias names.

The version is in the deployment's `user_config`; `reconfigure` loads the new bundle beside the
old one and swaps atomically, so a hot swap never fails a request.
"""

# No `from __future__ import annotations`: Serve pickles deployment classes (see serving/app.py).
import asyncio
import logging
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ray import serve

from serving.config import LOGGING_CONFIG, FaultSpec, SlotConfig
from serving.resolve import (
    ModelRef,
    download_bundle,
)
from serving.validation import validate_batch

log = logging.getLogger(__name__)


class _Loaded:
    """A loaded version: swapped in as one object so a request never sees half of two."""

    def __init__(self, ref: ModelRef, predictor: Any, path: Path) -> None:
        self.ref = ref
        self.predictor = predictor
        self.path = path
        self.loaded_at = datetime.now(UTC).isoformat()
        self.binary_strings = {
            f.name: set(f.str2bool) for f in predictor.manifest.input_features if f.str2bool
        }


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


@serve.deployment(
    max_ongoing_requests=32,
    graceful_shutdown_timeout_s=10,
    health_check_period_s=5,
    logging_config=LOGGING_CONFIG,
)
class ModelServer:
    """Serves one slot (champion or a shadow): validates inputs and predicts with the bundle."""

    def __init__(self, slot: str, tracking_uri: str, model_name: str, nice: int = 0) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if nice > 0:
            # A shadow is best effort: on a small machine its CPU must go to the champion first.
            # The replica owns its worker process, so this lowers nothing else.
            os.nice(nice)
        self._slot = slot
        self._tracking_uri = tracking_uri
        self._model_name = model_name
        self._loaded: _Loaded | None = None
        self._target: ModelRef | None = None
        self._fault: FaultSpec | None = None
        self._load_error: str | None = None
        self._cache = Path(tempfile.mkdtemp(prefix=f"mlops-{slot}-"))
        self._lock = asyncio.Lock()

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply a new user_config: load the named version beside the old one, then swap."""
        cfg = SlotConfig.model_validate(config or {})
        self._fault = cfg.fault
        async with self._lock:
            self._target = cfg.model
            current = self._loaded.ref if self._loaded else None
            if cfg.model == current:
                return
            if cfg.model is None:
                old, self._loaded, self._load_error = self._loaded, None, None
                self._discard(old)
                log.info("%s: no version to serve", self._slot)
                return
            try:
                loaded = await asyncio.to_thread(self._load, cfg.model)
            except Exception as exc:  # keep serving the old version; report why
                self._load_error = f"version {cfg.model.version}: {exc!r}"[:1000]
                log.exception("%s: cannot load version %s", self._slot, cfg.model.version)
                return
            old, self._loaded, self._load_error = self._loaded, loaded, None
            self._discard(old)
            log.info(
                "%s: now serving version %s (%s)",
                self._slot,
                cfg.model.version,
                loaded.predictor.mode,
            )

    def _load(self, ref: ModelRef) -> _Loaded:
        from mlops_assets.lifecycle.bundle import load_bundle

        dest = Path(tempfile.mkdtemp(prefix=f"v{ref.version}-", dir=self._cache))
        path = download_bundle(self._tracking_uri, ref.run_id, dest)
        predictor = load_bundle(path, num_threads=1)
        probe = [_probe_record(predictor.schema)]
        for _ in range(3):  # TorchScript optimises on its first calls; pay that here
            predictor.predict(probe)
        return _Loaded(ref, predictor, dest)

    @staticmethod
    def _discard(old: _Loaded | None) -> None:
        if old is not None:
            shutil.rmtree(old.path, ignore_errors=True)

    async def _apply_fault(self) -> float:
        """Act out the injected fault, if any; return the seconds it took."""
        fault = self._fault
        if fault is None:
            return 0.0
        started = time.perf_counter()
        if fault.kind == "raise":
            raise RuntimeError(f"injected fault in {self._slot}")
        if fault.kind == "sleep":
            await asyncio.sleep(fault.seconds)
        elif fault.kind == "block":
            time.sleep(fault.seconds)
        elif fault.kind == "crash":
            os._exit(1)
        return time.perf_counter() - started

    @staticmethod
    def _answer(
        loaded: _Loaded, records: list[Any], prefix: str, single: bool, extra_s: float = 0.0
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
            "warnings": [w.model_dump() for w in result.warnings],
            "warning_counts": result.warning_counts,
            "model_ms": (extra_s + time.perf_counter() - started) * 1000,
        }

    def _unavailable(self) -> dict[str, Any]:
        return {"status": "unavailable", "slot": self._slot, "error": self._load_error}

    async def predict(
        self, records: list[Any], prefix: str = "instances", single: bool = False
    ) -> dict[str, Any]:
        """Validate and predict; a dict with `status` ok, invalid or unavailable."""
        fault_s = await self._apply_fault()
        loaded = self._loaded
        if loaded is None:
            return self._unavailable()
        if loaded.predictor.mode == "torchscript":
            return self._answer(loaded, records, prefix, single, fault_s)
        return await asyncio.to_thread(self._answer, loaded, records, prefix, single, fault_s)

    async def predict_many(self, requests: list[tuple[list[Any], bool]]) -> list[dict[str, Any]]:
        """Answer several mirrored requests in one call, each validated and timed on its own."""
        fault_s = await self._apply_fault()
        loaded = self._loaded
        if loaded is None:
            return [self._unavailable() for _ in requests]

        def answer_all() -> list[dict[str, Any]]:
            return [
                self._answer(
                    loaded, records, "features" if single else "instances", single, fault_s
                )
                for records, single in requests
            ]

        if loaded.predictor.mode == "torchscript":
            return answer_all()
        return await asyncio.to_thread(answer_all)

    async def info(self) -> dict[str, Any]:
        """What this replica serves right now."""
        loaded = self._loaded
        base: dict[str, Any] = {
            "slot": self._slot,
            "model_name": self._model_name,
            "loaded": loaded is not None,
            "target_version": self._target.version if self._target else None,
            "load_error": self._load_error,
            "fault": self._fault.kind if self._fault else None,
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

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "_cache", ""), ignore_errors=True)


# ------------------------------------------------------------------------------------ ingress
