"""Serve one exported model bundle over HTTP: the default command of the serving runtime image.

A per-model container (docker/serving/Dockerfile) holds exactly one bundle at
`MLOPS_BUNDLE_DIR`; there is no shadow and no registry here, so the app is plain FastAPI on
uvicorn (about 5x less overhead per request than Ray Serve's proxy, STACK.md "Containers").
It answers the same request and response shapes as the Ray Serve app (DESIGN.md "Serving
API") for /health, /model/info, /predict, /batch_predict and /metrics.

Environment: MLOPS_BUNDLE_DIR, MLOPS_SERVE_HOST (127.0.0.1), MLOPS_SERVE_PORT (8100),
MLOPS_MODEL_NAME, MLOPS_MODEL_VERSION (labels only), MLOPS_MAX_BODY_BYTES (2000000),
MLOPS_MAX_BATCH_SIZE (1000), MLOPS_BUNDLE_SHA256 (the version's `bundle.sha256` tag: every file
of the bundle is checked against it before loading, and a mismatch exits with status 3).

Bodies go through the same total parser as the Ray app (serving/http.py: bounded depth, keys,
strings and numbers, lingering close past the size limit), and errors have the same shape
(`{"detail": "...", "errors": [{"field", "message", "kind"}]}`): no input gives a 5xx.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from mlops_assets.lifecycle.bundle import Predictor, load_bundle
from mlops_assets.lifecycle.digests import DIGESTS_FILE, BundleMismatch, verify_bundle
from serving.http import ApiError, field_error, json_response, read_json_body
from serving.metrics import CONTENT_TYPE, ServingMetrics
from serving.validation import validate_records

log = logging.getLogger("mlops.bundle_server")

ROLE = "champion"
BUNDLE_SHA256_ENV = "MLOPS_BUNDLE_SHA256"


class BundleApp:
    """The loaded bundle, its metrics and the request handlers."""

    def __init__(self, bundle_dir: Path, *, max_body_bytes: int, max_batch_size: int) -> None:
        # What is served is what was registered: MLOPS_BUNDLE_SHA256 is the version's
        # `bundle.sha256` tag (the image build sets it); a mismatch refuses to start.
        self.bundle_sha256 = verify_bundle(bundle_dir, os.environ.get(BUNDLE_SHA256_ENV) or None)
        if self.bundle_sha256 is None:
            log.warning("%s has no %s: serving it unverified", bundle_dir, DIGESTS_FILE)
        self.predictor: Predictor = load_bundle(bundle_dir, num_threads=1)
        self.version = os.environ.get("MLOPS_MODEL_VERSION", "bundle")
        self.name = os.environ.get("MLOPS_MODEL_NAME", self.predictor.target)
        self.max_body_bytes = max_body_bytes
        self.max_batch_size = max_batch_size
        manifest = self.predictor.manifest
        self.binary_strings = {
            f.name: set(f.str2bool) for f in manifest.input_features if f.str2bool
        }
        self.metrics = ServingMetrics()
        self.metrics.set_champion(self.version)

    def info(self) -> dict[str, Any]:
        """What /health and /model/info report about the model."""
        return {
            "name": self.name,
            "version": self.version,
            "state": ROLE,
            "mode": self.predictor.mode,
            "bundle_sha256": self.bundle_sha256,
            "target": self.predictor.target,
            "classes": self.predictor.classes,
        }

    def _reply(self, endpoint: str, started: float, code: int, body: dict[str, Any]) -> Response:
        labels = {"role": ROLE, "model_version": self.version}
        self.metrics.requests.labels(**labels, endpoint=endpoint, code=str(code)).inc()
        if code == 200:
            self.metrics.latency.labels(**labels).observe(time.perf_counter() - started)
        return json_response(body, code)

    async def predict(self, request: Request, endpoint: str) -> Response:
        """Validate, predict and answer one record (/predict) or many (/batch_predict)."""
        started = time.perf_counter()
        try:
            return await self._predict(request, endpoint, started)
        except ApiError as err:
            self.metrics.requests.labels(
                role=ROLE, model_version=self.version, endpoint=endpoint, code=str(err.status)
            ).inc()
            return err.response()

    def _records(self, payload: Any, single: bool) -> list[Any]:
        key = "features" if single else "instances"
        if not isinstance(payload, dict):
            raise field_error("body", f"expected a JSON object with '{key}'")
        if key not in payload:
            raise field_error(key, "is missing")
        records = payload[key]
        if single:
            if not isinstance(records, dict):
                raise field_error(key, "expected an object of feature values")
            return [records]
        if not isinstance(records, list):
            raise field_error(key, "expected an array of objects")
        if not records:
            raise field_error(key, "must not be empty")
        if len(records) > self.max_batch_size:
            raise ApiError(
                413, f"{len(records)} instances exceed max_batch_size ({self.max_batch_size})"
            )
        return records

    async def _predict(self, request: Request, endpoint: str, started: float) -> Response:
        payload = await read_json_body(request, self.max_body_bytes)
        single = endpoint == "/predict"
        key = "features" if single else "instances"
        records = self._records(payload, single)
        checked = validate_records(
            self.predictor.schema,
            records,
            key,
            single=single,
            binary_strings=self.binary_strings,
        )
        for (feature, kind), count in checked.warning_counts.items():
            self.metrics.input_warnings.labels(feature=feature, kind=kind).inc(count)
        if not checked.ok:
            errors = [issue.model_dump() for issue in checked.errors]
            first = errors[0]
            raise ApiError(422, f"{first['field']}: {first['message']}", errors)
        try:
            batch = self.predictor.predict(checked.records)
        except Exception:  # the model failed on valid input: a real 5xx, counted as one
            log.exception("the model failed on a validated request")
            raise ApiError(500, "the model failed on this request") from None
        for label in batch.labels:
            self.metrics.predictions.labels(
                role=ROLE, model_version=self.version, **{"class": label}
            ).inc()
        ids = [uuid.uuid4().hex for _ in batch.labels]
        probabilities = batch.probability_dicts()
        if single:
            body = {
                "request_id": ids[0],
                "prediction": batch.labels[0],
                "probabilities": probabilities[0],
                "model_version": self.version,
            }
        else:
            body = {
                "request_ids": ids,
                "predictions": batch.labels,
                "probabilities": probabilities,
                "model_version": self.version,
            }
        if checked.warnings:
            body["warnings"] = [w.model_dump() for w in checked.warnings]
        return self._reply(endpoint, started, 200, body)


def create_app(bundle_dir: Path | None = None) -> FastAPI:
    """Build the FastAPI app for the bundle at `bundle_dir` (default: MLOPS_BUNDLE_DIR)."""
    path = bundle_dir or Path(os.environ.get("MLOPS_BUNDLE_DIR", "/opt/mlops/bundle"))
    state = BundleApp(
        path,
        max_body_bytes=int(os.environ.get("MLOPS_MAX_BODY_BYTES", "2000000")),
        max_batch_size=int(os.environ.get("MLOPS_MAX_BATCH_SIZE", "1000")),
    )
    app = FastAPI(title=f"{state.name} v{state.version}", docs_url=None, redoc_url=None)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "champion": state.info(), "shadows": []}

    @app.get("/model/info")
    def model_info() -> dict[str, Any]:
        return {
            "champion": {
                **state.info(),
                "input_schema": state.predictor.schema.model_dump(mode="json"),
                "bundle": state.predictor.manifest.model_dump(mode="json"),
            },
            "shadows": [],
        }

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        return await state.predict(request, "/predict")

    @app.post("/batch_predict")
    async def batch_predict(request: Request) -> Response:
        return await state.predict(request, "/batch_predict")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    return app


def main() -> None:
    """Run uvicorn on MLOPS_SERVE_HOST:MLOPS_SERVE_PORT."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    host = os.environ.get("MLOPS_SERVE_HOST", "127.0.0.1")
    port = int(os.environ.get("MLOPS_SERVE_PORT", "8100"))
    try:
        app = create_app()
    except BundleMismatch as exc:
        # One line a user can act on, and a distinct exit code for the orchestrator.
        log.error("refusing to serve: the bundle is not the registered one: %s", exc)
        raise SystemExit(3) from None
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
