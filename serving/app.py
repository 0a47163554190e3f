"""The Ray Serve application: a FastAPI ingress hosting the champion, plus one shadow deployment
per shadow slot.

Deployments (application `mlops`):
- `ingress`: HTTP API of DESIGN.md, request limits, the champion model itself (in process: a
  champion answer crosses no actor call), mirroring to shadows (serving/shadow_traffic.py),
  Prometheus metrics, the prediction log writer. One replica: it owns the metrics and the log.
- `shadow-1` ... `shadow-N` (N = `max_shadows`): `ModelServer` replicas, each serving the
  version its registry alias points at (see `serving.resolve`), in a process of its own so a
  shadow's faults stay its own.

Every served version is in a `user_config` (the ingress's `champion`, each shadow's `model`);
changing it calls `reconfigure`, which loads the new bundle beside the old one and swaps
atomically (serving/host.py), so a hot swap never fails a request.

`app_builder(args)` is the import path for `serve deploy` / `serving/serve_config.yaml`.
"""

# No `from __future__ import annotations` here, on purpose: Serve pickles the ingress class by
# value, and a pickled method keeps only the globals its body uses, so FastAPI could no longer
# resolve a string annotation like "Request" and would treat `request` as a query parameter.
import asyncio
import logging
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.config import (
    CHAMPION_TIMEOUT_S,
    INFO_TIMEOUT_S,
    INGRESS_CPUS,
    INGRESS_NAME,
    INGRESS_REPLICAS,
    LOGGING_CONFIG,
    ROLE_REFRESH_S,
    STORE_METRICS_MIN_S,
    AppArgs,
    FaultSpec,
    IngressConfig,
    IngressUserConfig,
    SlotConfig,
    model_cpus,
)
from serving.describe import describe, summarize
from serving.edge import FEEDBACK_TOKEN_ENV, check_token, parse_labels
from serving.host import ModelHost, answer
from serving.http import (
    ApiError,
    extract_records,
    json_response,
    new_request_ids,
    read_json_body,
)
from serving.metrics import CONTENT_TYPE, ServingMetrics
from serving.model_server import ModelServer
from serving.openapi import openapi_for, swagger_ui
from serving.predlog import (
    LogEntry,
    PredictionLogWriter,
    dump_entry,
    encode_entries,
    load_entry,
)
from serving.predlog_spill import SPILL_FILE
from serving.resolve import (
    CHAMPION_SLOT,
    ModelRef,
    resolve_slots,
    shadow_slots,
    version_details,
)
from serving.shadow_traffic import ShadowTraffic

log = logging.getLogger(__name__)

# The typed OpenAPI document is built from the champion's schema on every request (so it
# follows a hot swap): FastAPI's own, which knows no request bodies, is turned off.
api = FastAPI(
    title="mlops model server", version="1", openapi_url=None, docs_url=None, redoc_url=None
)


@serve.deployment(
    name=INGRESS_NAME,
    num_replicas=INGRESS_REPLICAS,
    max_ongoing_requests=1000,
    graceful_shutdown_timeout_s=20,
    logging_config=LOGGING_CONFIG,
)
@serve.ingress(api)
class Ingress:
    """HTTP API: validation limits, champion answers, sampled mirroring, metrics, logging."""

    def __init__(self, args: dict[str, Any], shadows: list[DeploymentHandle]) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self._args = AppArgs.model_validate(args)
        self._serving = self._args.serving
        self._champion = ModelHost(CHAMPION_SLOT, self._args.tracking_uri, self._args.model_name)
        self._shadows = dict(zip(shadow_slots(self._args.max_shadows), shadows, strict=True))
        self._metrics = ServingMetrics()
        self._traffic = ShadowTraffic(
            self._shadows,
            self._metrics,
            self._log,
            self._count,
            percent=self._args.shadow_traffic_percent,
            timeout_s=self._serving.shadow_timeout_s,
            max_inflight=self._serving.max_inflight_shadow,
            linger_s=self._serving.shadow_batch_linger_s,
            max_rows=self._serving.max_batch_size,
        )
        self._slot_infos: dict[str, dict[str, Any]] = {}
        self._champion_version: str | None = None
        self._details_cache: dict[str, Any] = {}
        self._store_metrics_at = -math.inf
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._store: Any = None
        self._writer = PredictionLogWriter(
            self._write_rows,
            batch=self._serving.prediction_log_batch,
            flush_s=self._serving.prediction_log_flush_s,
            on_written=self._metrics.predlog_written.inc,
            on_dropped=self._metrics.predlog_dropped.inc,
            size=len,
            # Rows still queued when the store is down at shutdown go to this file, and the
            # next ingress writes them first (serving/predlog.py).
            spill_path=Path(self._args.home) / SPILL_FILE if self._args.home else None,
            dump=dump_entry,
            load=load_entry,
            on_spilled=self._metrics.predlog_spilled.inc,
            on_replayed=self._metrics.predlog_replayed.inc,
        )

    # --- lifecycle ---------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._started:
            return
        self._started = True
        if self._args.log_predictions:
            self._writer.start()
        self._spawn(self._refresh_loop())

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply the ingress user_config: the champion version and the mirroring knobs."""
        cfg = IngressUserConfig.model_validate(config or {})
        self._traffic.configure(
            cfg.shadow_traffic_percent,
            cfg.shadow_timeout_s or self._serving.shadow_timeout_s,
            cfg.max_inflight_shadow or self._serving.max_inflight_shadow,
        )
        self._ensure_started()
        await self._champion.reconfigure(SlotConfig(model=cfg.champion))
        self._refresh_champion()

    async def info(self) -> dict[str, Any]:
        """What the champion slot serves right now (the ingress hosts it)."""
        return self._champion.info()

    def _refresh_champion(self) -> None:
        info = self._champion.info()
        self._slot_infos[CHAMPION_SLOT] = info
        self._champion_version = info.get("version") if info.get("loaded") else None
        self._metrics.set_champion(self._champion_version)

    async def mirroring(self) -> dict[str, Any]:
        """The mirroring knobs in force (what `reconfigure` last applied)."""
        return self._traffic.knobs().model_dump()

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh_roles()
            except Exception:
                log.exception("refreshing the served versions failed")
            await asyncio.sleep(ROLE_REFRESH_S)

    def refresh_store_metrics(self) -> None:
        """Export the store's latest drift results and decision counts as metrics."""
        store = self._open_store()
        name = self._args.model_name
        self._metrics.set_drift(
            {(r.feature, r.method): (r.statistic, r.p_value) for r in store.latest_drift(name)}
        )
        self._metrics.set_decision_counts(store.decision_counts(name))
        stats = store.prediction_log_stats(exact=False)  # no row scan on every scrape
        self._metrics.set_prediction_log_size(
            stats.rows, stats.approx_bytes, self._serving.prediction_log_max_rows
        )

    async def _slot_info(self, slot: str) -> dict[str, Any]:
        if slot == CHAMPION_SLOT:
            return self._champion.info()
        handle = self._shadows[slot]
        try:
            return await asyncio.wait_for(handle.info.remote(), INFO_TIMEOUT_S)
        except Exception as exc:
            return {"slot": slot, "loaded": False, "error": f"unreachable: {exc!r}"[:300]}

    async def refresh_roles(self) -> dict[str, dict[str, Any]]:
        """Ask every slot what it serves; update mirroring targets and champion metrics."""
        slots = [CHAMPION_SLOT, *self._shadows]
        infos = await asyncio.gather(*(self._slot_info(s) for s in slots))
        self._slot_infos = dict(zip(slots, infos, strict=True))
        champ = self._slot_infos[CHAMPION_SLOT]
        self._champion_version = champ.get("version") if champ.get("loaded") else None
        self._metrics.set_champion(self._champion_version)
        self._metrics.set_bundle_mismatches(
            {slot: info.get("bundle_mismatch") for slot, info in self._slot_infos.items()}
        )
        self._traffic.active = {
            slot: info["version"]
            for slot, info in self._slot_infos.items()
            if slot != CHAMPION_SLOT and info.get("loaded")
        }
        served = {
            ("champion" if slot == CHAMPION_SLOT else "shadow"): info["version"]
            for slot, info in self._slot_infos.items()
            if info.get("loaded")
        }
        await self._update_model_metrics(served)
        return self._slot_infos

    async def _details(self, version: str) -> Any:
        cached = self._details_cache.get(version)
        if cached is not None and time.monotonic() - cached[0] < 30:
            return cached[1]
        details = await asyncio.to_thread(
            version_details, self._args.tracking_uri, self._args.model_name, version
        )
        self._details_cache[version] = (time.monotonic(), details)
        return details

    async def _update_model_metrics(self, served: dict[str, str]) -> None:
        values: dict[str, tuple[str, dict[str, float]]] = {}
        for role, version in served.items():
            try:
                values[role] = (version, (await self._details(version)).metrics)
            except Exception as exc:
                log.debug("no metrics for version %s: %s", version, exc)
        self._metrics.set_model_metrics(values)

    def __del__(self) -> None:
        # Serve calls this on graceful shutdown: write what is still queued.
        writer = getattr(self, "_writer", None)
        if writer is not None and writer.pending:
            writer.flush_blocking()
        champion = getattr(self, "_champion", None)
        if champion is not None:
            champion.close()

    # --- prediction log ----------------------------------------------------------------------

    def _open_store(self) -> Any:
        if self._store is None:
            from mlops_assets.lifecycle.store import LifecycleStore

            self._store = LifecycleStore(self._args.lifecycle_db_url)
        return self._store

    def _write_rows(self, entries: list[LogEntry]) -> int:
        # Runs in the writer's thread: rows are expanded and encoded here, not per request.
        rows = encode_entries(entries, self._args.model_name)
        return self._open_store().append_prediction_rows(rows)

    def _log(self, entry: LogEntry) -> None:
        if self._args.log_predictions:
            self._writer.submit([entry])

    # --- metrics helpers ---------------------------------------------------------------------

    def _count(self, role: str, version: str | None, endpoint: str, code: int | str) -> None:
        self._metrics.count_request(role, version, endpoint, code)

    # --- predictions -------------------------------------------------------------------------

    async def _call_champion(self, records: list[Any], prefix: str, single: bool) -> dict[str, Any]:
        loaded = self._champion.loaded
        if loaded is None:
            raise ApiError(503, "no champion model is loaded")
        try:
            if loaded.predictor.mode == "torchscript":
                # A TorchScript call takes about a millisecond a row: cheaper here than the
                # thread hand-off it would need to leave the event loop.
                out = answer(loaded, records, prefix, single)
            else:
                out = await asyncio.wait_for(
                    asyncio.to_thread(answer, loaded, records, prefix, single), CHAMPION_TIMEOUT_S
                )
        except TimeoutError:
            raise ApiError(504, "the champion did not answer in time") from None
        except Exception as exc:
            log.error("champion call failed: %r", exc)
            raise ApiError(503, "the champion model is unavailable") from None
        if out["status"] == "invalid":
            errors = out["errors"]
            first = errors[0]
            raise ApiError(422, f"{first['field']}: {first['message']}", errors)
        return out

    async def _serve_predictions(self, request: Request, endpoint: str, single: bool) -> Response:
        self._ensure_started()
        started = time.perf_counter()
        version = self._champion_version
        try:
            body = await read_json_body(request, self._serving.max_body_bytes)
            records, prefix = extract_records(body, single, self._serving.max_batch_size)
            out = await self._call_champion(records, prefix, single)
        except ApiError as err:
            self._count("champion", version, endpoint, err.status)
            return err.response()
        version = out["version"]
        if version != self._champion_version:
            self._champion_version = version
            self._metrics.set_champion(version)
        request_ids = new_request_ids(len(records))
        classes = out["classes"]
        probs = [dict(zip(classes, row, strict=True)) for row in out["probabilities"].tolist()]
        if single:
            payload: dict[str, Any] = {
                "request_id": request_ids[0],
                "prediction": out["labels"][0],
                "probabilities": probs[0],
                "model_version": version,
            }
        else:
            payload = {
                "request_ids": request_ids,
                "predictions": out["labels"],
                "probabilities": probs,
                "model_version": version,
            }
        if out["warnings"]:
            payload["warnings"] = out["warnings"]
        response = json_response(payload)
        elapsed = time.perf_counter() - started
        self._count("champion", version, endpoint, 200)
        self._metrics.observe_answer("champion", version, elapsed, out)
        self._log(
            LogEntry(
                role="champion",
                version=version,
                time=datetime.now(UTC),
                request_ids=request_ids,
                records=records,
                latency_ms=out["model_ms"],
                labels=out["labels"],
                probabilities=out["probabilities"],
                classes=classes,
                features=out["features"],
            )
        )
        self._traffic.offer(endpoint, request_ids, records, single)
        return response

    # --- endpoints ---------------------------------------------------------------------------

    @api.post("/predict")
    async def predict(self, request: Request) -> Response:
        """`{"features": {...}}` -> the champion's answer for one row."""
        return await self._serve_predictions(request, "/predict", single=True)

    @api.post("/batch_predict")
    async def batch_predict(self, request: Request) -> Response:
        """`{"instances": [{...}, ...]}` (or MLflow's `dataframe_split`) -> one answer each."""
        return await self._serve_predictions(request, "/batch_predict", single=False)

    @api.get("/health")
    async def health(self) -> Response:
        """200 with the served versions, 503 while no champion is loaded."""
        self._ensure_started()
        infos = await self.refresh_roles()
        champ = infos[CHAMPION_SLOT]
        shadows = [summarize(i) for s, i in infos.items() if s != CHAMPION_SLOT and i.get("loaded")]
        if not champ.get("loaded"):
            reason = champ.get("load_error") or champ.get("error") or "no champion alias"
            self._count("champion", None, "/health", 503)
            return JSONResponse(
                {"status": "unavailable", "champion": None, "shadows": shadows, "detail": reason},
                status_code=503,
            )
        self._count("champion", champ.get("version"), "/health", 200)
        return JSONResponse({"status": "ok", "champion": summarize(champ), "shadows": shadows})

    async def _describe(self, info: dict[str, Any]) -> dict[str, Any]:
        try:
            details, error = await self._details(info["version"]), None
        except Exception as exc:
            details, error = None, f"{exc!r}"[:300]
        return describe(info, self._args.model_name, details, error)

    @api.get("/model/info")
    async def model_info(self) -> Response:
        """Champion and shadows: version, run, state, data hashes, metrics, schema, promoted_at."""
        self._ensure_started()
        self._details_cache.clear()  # tags such as lifecycle.state change without a reload
        infos = await self.refresh_roles()
        champ = infos[CHAMPION_SLOT]
        shadows = [
            await self._describe(i)
            for s, i in infos.items()
            if s != CHAMPION_SLOT and i.get("loaded")
        ]
        body = {
            "model_name": self._args.model_name,
            "champion": await self._describe(champ) if champ.get("loaded") else None,
            "shadows": shadows,
            "mirroring": {
                "shadow_traffic_percent": self._traffic.percent,
                "max_inflight_shadow": self._traffic.max_inflight,
                "shadow_timeout_s": self._traffic.timeout_s,
            },
        }
        self._count("champion", self._champion_version, "/model/info", 200)
        return JSONResponse(body)

    @api.post("/feedback")
    async def feedback(self, request: Request) -> Response:
        """`{"labels": [{"request_id", "label"}, ...]}` -> accepted count and unknown ids."""
        self._ensure_started()
        try:
            check_token(request, FEEDBACK_TOKEN_ENV, "feedback")
            body = await read_json_body(request, self._serving.max_body_bytes)
            items, refused = parse_labels(body, self._champion.info().get("classes"))
        except ApiError as err:
            self._count("champion", self._champion_version, "/feedback", err.status)
            return err.response()
        try:
            await self._writer.flush()  # labels may refer to predictions still queued
            result = await asyncio.to_thread(self._open_store().add_labels, items, "api")
        except ValueError as exc:  # the store refused the labels themselves, not a failure
            self._count("champion", self._champion_version, "/feedback", 422)
            return ApiError(422, str(exc)).response()
        except Exception as exc:
            log.error("storing labels failed: %r", exc)
            self._count("champion", self._champion_version, "/feedback", 503)
            return ApiError(503, "the lifecycle store is unavailable").response()
        self._count("champion", self._champion_version, "/feedback", 200)
        rejected = [*refused, *(r.model_dump(mode="json") for r in result.rejected)]
        reasons: dict[str, int] = {}
        for item in rejected:
            reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
        self._metrics.reject_labels(reasons)
        return json_response(
            {
                "accepted": result.accepted,
                "unknown_ids": result.unknown_ids,
                "rejected": rejected,
                "conflicts": result.conflicts,
                "duplicates": result.duplicates,
            }
        )

    @api.get("/openapi.json")
    async def openapi(self) -> Response:
        """The OpenAPI 3.1 document, typed from the served champion's input schema."""
        doc = openapi_for(self._champion.info(), max_batch_size=self._serving.max_batch_size)
        return json_response(doc)

    @api.get("/docs")
    async def docs(self) -> Response:
        """Swagger UI over the typed document."""
        return swagger_ui()

    @api.get("/metrics")
    async def metrics(self) -> Response:
        """Prometheus text format (drift and decision counts read from the store on scrape)."""
        self._ensure_started()
        self._metrics.predlog_queued.set(self._writer.pending)
        if time.monotonic() - self._store_metrics_at >= STORE_METRICS_MIN_S:
            self._store_metrics_at = time.monotonic()
            try:
                await asyncio.to_thread(self.refresh_store_metrics)
            except Exception as exc:  # the store may be down: serve the other metrics anyway
                log.warning("reading drift and decisions from the store failed: %r", exc)
        return Response(self._metrics.render(), media_type=CONTENT_TYPE)

    def _check_admin(self, request: Request) -> None:
        check_token(request, self._serving.admin_token_env, "admin")

    @api.post("/admin/reload")
    async def admin_reload(self, request: Request) -> Response:
        """Re-resolve the registry aliases and hot-swap the model deployments."""
        self._ensure_started()
        try:
            self._check_admin(request)
        except ApiError as err:
            self._count("champion", self._champion_version, "/admin/reload", err.status)
            return err.response()
        from serving.deploy import apply

        started = time.monotonic()
        try:
            slots = await asyncio.to_thread(apply, self._args, reread_policy=True)
        except Exception as exc:
            log.exception("reload failed")
            self._count("champion", self._champion_version, "/admin/reload", 500)
            return ApiError(500, f"reload failed: {exc}").response()
        await self.refresh_roles()
        self._count("champion", self._champion_version, "/admin/reload", 200)
        return JSONResponse(
            {
                "status": "reloaded",
                "slots": {s: (r.version if r else None) for s, r in slots.items()},
                "seconds": round(time.monotonic() - started, 3),
            }
        )


# ------------------------------------------------------------------------------------ builder


def slot_config(ref: ModelRef | None, fault: FaultSpec | dict | None = None) -> dict[str, Any]:
    """The user_config dict of a model slot."""
    fault_spec = FaultSpec.model_validate(fault) if isinstance(fault, dict) else fault
    return SlotConfig(model=ref, fault=fault_spec).model_dump(mode="json")


def ingress_config(mirroring: IngressConfig, champion: ModelRef | None) -> dict[str, Any]:
    """The user_config dict of the ingress: the mirroring knobs and the champion version."""
    return IngressUserConfig(**mirroring.model_dump(), champion=champion).model_dump(mode="json")


def build_app(args: AppArgs, slots: dict[str, ModelRef | None] | None = None) -> Any:
    """The bound application: the ingress (hosting the champion) + `max_shadows` shadow slots."""
    slots = slots or {}
    options = {"ray_actor_options": {"num_cpus": model_cpus(args)}}

    def model(slot: str) -> Any:
        return ModelServer.options(
            name=slot, user_config=slot_config(slots.get(slot)), **options
        ).bind(slot, args.tracking_uri, args.model_name, args.serving.shadow_nice)

    shadows = [model(slot) for slot in shadow_slots(args.max_shadows)]
    ingress = Ingress.options(
        ray_actor_options={"num_cpus": INGRESS_CPUS + model_cpus(args)},
        user_config=ingress_config(
            IngressConfig(shadow_traffic_percent=args.shadow_traffic_percent),
            slots.get(CHAMPION_SLOT),
        ),
    )
    return ingress.bind(args.model_dump(mode="json"), shadows)


def app_builder(args: dict[str, Any]) -> Any:
    """Import path for `serve deploy`: args need only `config_path`; models from the aliases."""
    app_args = AppArgs.from_builder_args(dict(args or {}))
    try:
        slots = resolve_slots(app_args.tracking_uri, app_args.model_name, app_args.max_shadows)
    except Exception as exc:  # the registry may be down; serve nothing until a reload
        log.error("cannot resolve the registry aliases: %s", exc)
        slots = {}
    return build_app(app_args, slots)
