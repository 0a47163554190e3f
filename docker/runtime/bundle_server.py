"""Serve one exported model bundle over HTTP: the default command of the serving runtime image.

A per-model container (docker/serving/Dockerfile) holds exactly one bundle at
`MLOPS_BUNDLE_DIR`; there is no shadow and no registry here, so the app is plain FastAPI on
uvicorn (about 5x less overhead per request than Ray Serve's proxy, STACK.md "Containers").
It answers the same request and response shapes as the Ray Serve app (DESIGN.md "Serving
API") for /health, /model/info, /predict, /batch_predict and /metrics.

Environment: MLOPS_BUNDLE_DIR, MLOPS_SERVE_HOST (127.0.0.1), MLOPS_SERVE_PORT (8080),
MLOPS_MODEL_NAME, MLOPS_MODEL_VERSION (labels only), MLOPS_MAX_BODY_BYTES (2000000),
MLOPS_MAX_BATCH_SIZE (1000).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from mlops_assets.lifecycle.bundle import Predictor, load_bundle
from serving.metrics import CONTENT_TYPE, ServingMetrics
from serving.validation import validate_records

log = logging.getLogger("mlops.bundle_server")

ROLE = "champion"


class BundleApp:
    """The loaded bundle, its metrics and the request handlers."""

    def __init__(self, bundle_dir: Path, *, max_body_bytes: int, max_batch_size: int) -> None:
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
            "target": self.predictor.target,
            "classes": self.predictor.classes,
        }

    def _reply(self, endpoint: str, started: float, code: int, body: dict[str, Any]) -> Response:
        labels = {"role": ROLE, "model_version": self.version}
        self.metrics.requests.labels(**labels, endpoint=endpoint, code=str(code)).inc()
        if code == 200:
            self.metrics.latency.labels(**labels).observe(time.perf_counter() - started)
        return JSONResponse(body, status_code=code)

    async def predict(self, request: Request, endpoint: str) -> Response:
        """Validate, predict and answer one record (/predict) or many (/batch_predict)."""
        started = time.perf_counter()
        declared = request.headers.get("content-length", "")
        # Refuse a declared oversize body before reading it; check the real size as well.
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            detail = f"body of {declared} bytes exceeds {self.max_body_bytes}"
            return self._reply(endpoint, started, 413, {"detail": detail})
        raw = await request.body()
        if len(raw) > self.max_body_bytes:
            detail = f"body of {len(raw)} bytes exceeds {self.max_body_bytes}"
            return self._reply(endpoint, started, 413, {"detail": detail})
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            return self._reply(endpoint, started, 422, {"detail": f"invalid JSON: {exc}"})
        single = endpoint == "/predict"
        key = "features" if single else "instances"
        records = payload.get(key) if isinstance(payload, dict) else None
        if single and isinstance(records, dict):
            records = [records]
        if not isinstance(records, list) or not records:
            detail = [{"field": key, "message": "is missing or empty"}]
            return self._reply(endpoint, started, 422, {"detail": detail})
        if len(records) > self.max_batch_size:
            detail = [{"field": key, "message": f"more than {self.max_batch_size} instances"}]
            return self._reply(endpoint, started, 413, {"detail": detail})
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
            detail = [issue.model_dump() for issue in checked.errors]
            return self._reply(endpoint, started, 422, {"detail": detail})
        batch = self.predictor.predict(checked.records)
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
    port = int(os.environ.get("MLOPS_SERVE_PORT", "8080"))
    uvicorn.run(create_app(), host=host, port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
