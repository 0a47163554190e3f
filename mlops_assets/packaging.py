"""Per-model images: `mlops package VERSION` builds `<repository>/<model>:v<N>`.

An image is the serving runtime (`bash docker/build.sh serving-runtime`: CPU torch, FastAPI,
`docker/runtime/bundle_server.py`) plus exactly one registered bundle, downloaded from the
version's MLflow run and checked against its `bundle.sha256` tag before the build. The image
carries that digest as `MLOPS_BUNDLE_SHA256`, so the container verifies its own bundle again at
start (and exits 3 on a mismatch). The build runs with no network: everything is in the
runtime image already.

The image reference and id are recorded on the version as the tags `image.ref` and
`image.digest` (`mlops lineage` shows them). With `deployment.package_images: true` every
START_SHADOW, PROMOTE and BOOTSTRAP packages its version after the registry move; a failed
build is logged and never undoes the decision (`mlops package N` builds it again). Packaging the
same bundle twice reuses the image: the build is keyed by the bundle digest.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_assets.lifecycle.digests import BundleMismatch, verify_bundle
from mlops_assets.lifecycle.states import Decision, Tag
from mlops_assets.lifecycle.tracking import reaching, tracking_uri_of
from mlops_assets.lifecycle.training import BUNDLE_ARTIFACT

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops_assets.lifecycle.records import DecisionRecord
    from mlops_assets.settings import Settings

log = logging.getLogger(__name__)

# The label that keys reuse: an image whose bundle digest matches is not built again.
BUNDLE_LABEL = "io.mlops.bundle.sha256"
PACKAGED_DECISIONS = frozenset({Decision.START_SHADOW, Decision.PROMOTE, Decision.BOOTSTRAP})
# The runtime holds no Ludwig: a bundle must have the TorchScript fast path to be served there.
TORCHSCRIPT_FILE = "inference.pt"

MODEL_DOCKERFILE = """\
# A per-model serving image, written by mlops_assets/packaging.py: the serving runtime plus
# one registered bundle. The command, user, port and health check come from the runtime.
ARG RUNTIME_IMAGE=mlops/serving-runtime:0.1.0
FROM ${RUNTIME_IMAGE}
ARG BUNDLE_SHA256
ARG MODEL_NAME
ARG MODEL_VERSION
ENV MLOPS_BUNDLE_SHA256=${BUNDLE_SHA256} \
    MLOPS_MODEL_NAME=${MODEL_NAME} \
    MLOPS_MODEL_VERSION=${MODEL_VERSION}
COPY bundle/ /opt/mlops/bundle/
"""


class PackagingError(RuntimeError):
    """A version cannot be packaged; the message says why and what to do."""


@dataclass(frozen=True)
class PackagedImage:
    """One per-model image and how it was made."""

    ref: str
    digest: str
    size_bytes: int
    build_seconds: float
    reused: bool
    bundle_sha256: str

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON data."""
        return asdict(self)


def image_ref(settings: Settings, version: str) -> str:
    """`<repository>/<model>:v<N>` for a version of the configured model."""
    repository = settings.config.deployment.image_repository
    return f"{repository}/{settings.model_name.lower()}:v{version}"


def docker_client() -> Any:
    """A Docker client for `DOCKER_HOST` that answers, or PackagingError saying how to start one."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except DockerException as exc:
        raise PackagingError(
            f"no Docker engine answers ({exc}); start one with "
            '`eval "$(bash scripts/start_docker.sh | grep ^export)"` and run this again'
        ) from exc
    return client


def _existing(engine: Any, ref: str, bundle_sha256: str) -> Any | None:
    from docker.errors import ImageNotFound

    try:
        image = engine.images.get(ref)
    except ImageNotFound:
        return None
    return image if image.labels.get(BUNDLE_LABEL) == bundle_sha256 else None


def write_build_context(bundle_dir: Path, context: Path) -> Path:
    """Lay out `context/` (the Dockerfile and `bundle/`) for one bundle; return `context`."""
    import shutil

    shutil.copytree(bundle_dir, context / "bundle")
    (context / "Dockerfile").write_text(MODEL_DOCKERFILE)
    return context


def package_version(
    settings: Settings, client: MlflowClient, version: str, *, force: bool = False
) -> PackagedImage:
    """Build (or reuse) the image of `version` and record it on the version's tags."""
    name = settings.model_name
    uri = tracking_uri_of(client)
    with reaching(uri, f"reading {name} v{version}"):
        mv = client.get_model_version(name, version)
    expected = (mv.tags or {}).get(Tag.BUNDLE_SHA256)
    if not expected:
        raise PackagingError(
            f"{name} v{version} has no {Tag.BUNDLE_SHA256} tag (registered before bundles were "
            "digested): there is nothing to check its bundle against; train it again"
        )
    ref = image_ref(settings, version)
    engine = docker_client()
    started = time.perf_counter()
    image = None if force else _existing(engine, ref, expected)
    reused = image is not None
    if image is None:
        image = _build(settings, engine, mv.run_id, uri, ref, expected, version)
    seconds = time.perf_counter() - started
    with reaching(uri, f"tagging {name} v{version} with its image"):
        client.set_model_version_tag(name, version, Tag.IMAGE_REF, ref)
        client.set_model_version_tag(name, version, Tag.IMAGE_DIGEST, image.id)
    built = PackagedImage(
        ref=ref,
        digest=image.id,
        size_bytes=int(image.attrs.get("Size", 0)),
        build_seconds=round(seconds, 2),
        reused=reused,
        bundle_sha256=expected,
    )
    log.info(
        "%s %s (%s, %.0f MB) for %s v%s in %.1f s",
        "reused" if reused else "built",
        ref,
        image.short_id,
        built.size_bytes / 1e6,
        name,
        version,
        seconds,
    )
    return built


def _build(
    settings: Settings, engine: Any, run_id: str, uri: str, ref: str, expected: str, version: str
) -> Any:
    import mlflow.artifacts
    from docker.errors import BuildError, ImageNotFound

    runtime = settings.config.deployment.runtime_image
    try:
        engine.images.get(runtime)
    except ImageNotFound as exc:
        raise PackagingError(
            f"the serving runtime image {runtime} is not built on this engine; "
            "build it with `bash docker/build.sh serving-runtime` (deployment.runtime_image)"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="mlops-package-") as tmp:
        with reaching(uri, f"downloading the bundle of v{version}"):
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=BUNDLE_ARTIFACT,
                dst_path=str(Path(tmp) / "download"),
                tracking_uri=uri,
            )
        bundle = Path(local)
        try:
            verify_bundle(bundle, expected)
        except BundleMismatch as exc:
            raise PackagingError(
                f"the stored bundle of v{version} is not the registered one: {exc}"
            ) from exc
        if not (bundle / TORCHSCRIPT_FILE).is_file():
            raise PackagingError(
                f"v{version} has no TorchScript export ({TORCHSCRIPT_FILE}); the serving "
                "runtime carries no Ludwig, so only bundles with the fast path can be packaged"
            )
        context = write_build_context(bundle, Path(tmp) / "context")
        log.info("building %s on %s (network none)", ref, runtime)
        try:
            image, _ = engine.images.build(
                path=str(context),
                tag=ref,
                buildargs={
                    "RUNTIME_IMAGE": runtime,
                    "BUNDLE_SHA256": expected,
                    "MODEL_NAME": settings.model_name,
                    "MODEL_VERSION": version,
                },
                labels={
                    BUNDLE_LABEL: expected,
                    "org.opencontainers.image.title": settings.model_name,
                    "org.opencontainers.image.version": f"v{version}",
                    "io.mlops.mlflow.run_id": run_id,
                },
                network_mode="none",
                rm=True,
                forcerm=True,
                pull=False,
            )
        except BuildError as exc:
            tail = " | ".join(
                str(line.get("stream") or line.get("error") or "").strip()
                for line in list(exc.build_log)[-5:]
            )
            raise PackagingError(f"docker build of {ref} failed: {exc.msg} ({tail})") from exc
    return image


def package_after_decision(settings: Settings, record: DecisionRecord) -> PackagedImage | None:
    """Package the version a START_SHADOW, PROMOTE or BOOTSTRAP moved; log and go on on failure."""
    if record.decision not in PACKAGED_DECISIONS or not record.challenger_version:
        return None
    from mlflow import MlflowClient

    version = record.challenger_version
    try:
        return package_version(settings, MlflowClient(settings.tracking_uri), version)
    except Exception as exc:  # the decision stands whatever the build does
        log.error(
            "decision %s was applied, but packaging v%s failed: %s (run `mlops package %s`)",
            record.id,
            version,
            exc,
            version,
        )
        return None
