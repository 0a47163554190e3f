"""Configuration: `config/config.yaml` and `config/ludwig_config.yaml`, validated by pydantic.

Every error names the file and the dotted key, so the CLI can print one clear line and exit 2.

Relative paths in the config resolve against the *project directory*: the parent of the
`config/` folder that holds the file (or the file's own folder when it is not in `config/`).
Environment overrides: `MLOPS_CONFIG` (config path), `MLOPS_HOME` (state directory, default
`<project>/.mlops`), `MLFLOW_TRACKING_URI` and `MLOPS_LIFECYCLE_DB`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG = Path("config/config.yaml")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "": 86400}


class ConfigError(Exception):
    """A configuration problem, worded for a person: file, key and what is wrong."""

    def __init__(self, file: Path | str, key: str | None, message: str) -> None:
        self.file = str(file)
        self.key = key
        self.message = message
        where = f"{self.file}: {key}" if key else self.file
        super().__init__(f"{where}: {message}")


def parse_duration(value: Any) -> timedelta:
    """Parse `14d`, `6h`, `30m`, `90s`, `2w`, a plain number of days, or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration must be like 14d, 6h, 90s or a number of days")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a duration; use a finite number of days")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        seconds = float(value) * 86400
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration; use 14d, 6h, 30m, 90s or a number of days")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{value!r} is too long for a duration") from None


def format_duration(value: timedelta) -> str:
    """Render a duration the way the config accepts it (`90s`, `6h`, `14d`)."""
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureRule(_Strict):
    """Optional explicit constraints for one input column (otherwise they are inferred)."""

    type: Literal["number", "category", "binary"] | None = None
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    nullable: bool = True


class SplitConfig(_Strict):
    """Train / validation / holdout fractions and the seed that makes them repeatable."""

    train: float = Field(0.7, gt=0, lt=1)
    validation: float = Field(0.1, ge=0, lt=1)
    holdout: float = Field(0.2, gt=0, lt=1)
    seed: int = 42

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.holdout
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + holdout must be 1.0, not {total:g}")
        return self


class DataConfig(_Strict):
    """Where data lands and what a valid file looks like."""

    raw_dir: Path = Path("data/raw")
    quarantine_dir: Path = Path("data/quarantine")
    labels_dir: Path = Path("data/labels")
    target_column: str = "target"
    min_rows: int = Field(50, ge=1)
    max_missing_fraction: float = Field(0.3, ge=0, le=1)
    max_category_cardinality: int = Field(50, ge=2)
    # A dropped file (raw or label) is taken only once its size and mtime have been stable
    # this long (mlops_assets/files.py); 0 takes it at once (tests, the demo).
    settle_seconds: float = Field(5, ge=0, le=3600)
    # A raw or label file over this size is refused (quarantined with a report), never read.
    max_file_bytes: int = Field(512 * 1024**2, ge=1)
    split: SplitConfig = SplitConfig()
    features: dict[str, FeatureRule] = Field(default_factory=dict)


class HyperoptConfig(_Strict):
    """Optional hyperparameter search (Optuna driving Ludwig's local backend, hyperopt.py)."""

    enabled: bool = False
    trials: int = Field(4, ge=1, le=200)
    metric: str = "loss"  # a validation metric Ludwig reports for the target (or `combined`)
    goal: Literal["minimize", "maximize"] = "minimize"
    # Dotted keys into the Ludwig config, each with the values to choose from.
    space: dict[str, list[Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _searchable(self) -> HyperoptConfig:
        for key, values in self.space.items():
            if key.split(".", 1)[0] not in ("trainer", "combiner", "preprocessing", "defaults"):
                raise ValueError(
                    f"space key {key!r}: only trainer.*, combiner.*, preprocessing.* and "
                    "defaults.* can be searched"
                )
            if not values:
                raise ValueError(f"space key {key!r} lists no values")
        if self.enabled and not self.space:
            raise ValueError("enabled with an empty space: name at least one key to search")
        return self


class TrainingWindow(_Strict):
    """Which validated files a challenger trains on (lifecycle/window.py).

    `kind`: `latest` (the file that triggered the training), `all`, `last_files` (the newest
    `files`) or `since` (files up to `age` older than the triggering file).
    """

    kind: Literal["latest", "all", "last_files", "since"] = "latest"
    files: int | None = Field(None, ge=1)
    age: Duration | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value: Any) -> Any:
        # `window: all`, `window: {last_files: 5}` or `window: {since: 90d}` in the YAML.
        if isinstance(value, str):
            return {"kind": value}
        if isinstance(value, dict) and "kind" not in value and len(value) == 1:
            ((key, arg),) = value.items()
            if key == "last_files":
                return {"kind": key, "files": arg}
            if key == "since":
                return {"kind": key, "age": arg}
        return value

    @model_validator(mode="after")
    def _argument(self) -> TrainingWindow:
        if self.kind == "last_files" and self.files is None:
            raise ValueError("last_files needs a number of files, e.g. {last_files: 5}")
        if self.kind == "since" and self.age is None:
            raise ValueError("since needs an age, e.g. {since: 90d}")
        return self

    def describe(self) -> str:
        """The window as it is written in config.yaml (the `data.window` tag)."""
        if self.kind == "last_files":
            return f"last_files: {self.files}"
        if self.kind == "since":
            return f"since: {format_duration(self.age)}"
        return self.kind


class TrainingSection(_Strict):
    """What data a challenger learns from."""

    # The newest 90 days of files: history to learn from, while a regime that ended long ago
    # ages out; the row cap bounds the cost as files accumulate.
    window: TrainingWindow = TrainingWindow(kind="since", age=timedelta(days=90))
    # At most this many rows, newest files first (the triggering file is always whole).
    max_rows: int | None = Field(200_000, ge=1)


class LudwigSection(_Strict):
    """How challengers are trained."""

    config_path: Path = Path("config/ludwig_config.yaml")
    random_seed: int = 42
    num_threads: int = Field(1, ge=1)
    hyperopt: HyperoptConfig = HyperoptConfig()


class MlflowSection(_Strict):
    """Tracking and registry. `tracking_uri: null` means SQLite under MLOPS_HOME."""

    tracking_uri: str | None = None
    experiment_name: str = "champion-challenger"
    registered_model_name: str = "churn-classifier"


MetricName = str


class ChampionChallengerPolicy(_Strict):
    """The decision policy (DESIGN.md "Policy")."""

    evaluation_metrics: list[MetricName] = Field(
        default_factory=lambda: ["accuracy", "precision", "recall", "f1_score"]
    )
    primary_metric: MetricName = "f1_score"
    champion_threshold: float = Field(0.05, ge=0)
    improvement: Literal["absolute", "relative"] = "absolute"
    significance_alpha: float = Field(0.05, gt=0, lt=1)
    min_holdout_rows: int = Field(30, ge=1)
    bootstrap_resamples: int = Field(1000, ge=100)
    max_metric_degradation: float = Field(0.02, ge=0)
    metric_floors: dict[MetricName, float] = Field(default_factory=lambda: {"accuracy": 0.5})
    direct_promotion_margin: float | None = Field(None, gt=0)
    shadow_mode_duration: Duration = timedelta(days=14)
    auto_promotion: bool = True
    shadow_traffic_percent: float = Field(100.0, ge=0, le=100)
    shadow_min_labelled_samples: int = Field(100, ge=1)
    max_shadow_extensions: int = Field(2, ge=0)
    # A shadow is rejected when its error rate exceeds the champion's by more than this, or,
    # when set, when its p50 latency exceeds this multiple of the champion's.
    error_rate_tolerance: float = Field(0.01, ge=0, le=1)
    max_latency_ratio: float | None = Field(None, gt=0)
    probation_period: Duration = timedelta(days=3)
    rollback_threshold: float = Field(0.05, ge=0)
    # A champion in probation is rolled back when its live error rate exceeds this.
    max_error_rate: float = Field(0.05, ge=0, le=1)
    max_shadows: int = Field(1, ge=1)

    @field_validator("evaluation_metrics")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one metric")
        return value

    @field_validator("primary_metric")
    @classmethod
    def _primary_is_evaluated(cls, value: str, info: ValidationInfo) -> str:
        metrics = info.data.get("evaluation_metrics")
        if metrics is not None and value not in metrics:
            raise ValueError(
                f"primary_metric {value!r} must be one of evaluation_metrics {metrics}"
            )
        return value


class ServingSection(_Strict):
    """Ray Serve application settings."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    num_cpus: int = Field(2, ge=1)
    max_batch_size: int = Field(1000, ge=1)
    max_body_bytes: int = Field(2_000_000, ge=1024)
    shadow_timeout_s: float = Field(2.0, gt=0)
    max_inflight_shadow: int = Field(64, ge=1)
    # Mirrored copies wait this long for company, then go to the shadow in one call.
    shadow_batch_linger_s: float = Field(0.2, ge=0, le=5)
    # Shadow replicas run at this `nice` level (0: as the champion) so they never take the
    # champion's CPU on a small machine.
    shadow_nice: int = Field(10, ge=0, le=19)
    admin_token_env: str = "MLOPS_ADMIN_TOKEN"
    prediction_log_flush_s: float = Field(0.5, gt=0)
    prediction_log_batch: int = Field(256, ge=1)
    # The prediction log's size bound: a size check (metric and alert) fires above it, before
    # the disk fills. Retention (`automation.retention`) is what keeps it below.
    prediction_log_max_rows: int = Field(5_000_000, ge=1000)


class LifecycleStoreSection(_Strict):
    """The durable lifecycle store. `url: null` means SQLite under MLOPS_HOME."""

    url: str | None = None


class AutomationSection(_Strict):
    """Sensors, schedule and alerts."""

    schedule_cron: str = "0 */6 * * *"
    sensor_interval_s: int = Field(30, ge=1)
    # The schedule is the new-file sensor's safety net: it leaves files younger than this to
    # the sensor, so the two never race to run the same file.
    schedule_grace_s: int = Field(300, ge=0)
    # Prediction-log rows older than this go, of every role, except those an open shadow test
    # or probation window still needs (lifecycle/retention.py).
    retention: Duration = timedelta(days=30)
    alert_webhook_url: str | None = None


class DeploymentSection(_Strict):
    """Per-model container images (`mlops package`, mlops_assets/packaging.py)."""

    # Every START_SHADOW, PROMOTE and BOOTSTRAP packages the version as its own image.
    package_images: bool = False
    # The serving runtime the images are built on (`bash docker/build.sh serving-runtime`).
    runtime_image: str = "mlops/serving-runtime:0.1.0"
    # Images are named <image_repository>/<registered model name>:v<version>.
    image_repository: str = Field("mlops", pattern=r"^[a-z0-9]+([._/-][a-z0-9]+)*$")


class AppConfig(_Strict):
    """The whole of `config/config.yaml`."""

    data: DataConfig = DataConfig()
    training: TrainingSection = TrainingSection()
    ludwig: LudwigSection = LudwigSection()
    mlflow: MlflowSection = MlflowSection()
    champion_challenger: ChampionChallengerPolicy = ChampionChallengerPolicy()
    serving: ServingSection = ServingSection()
    lifecycle_store: LifecycleStoreSection = LifecycleStoreSection()
    automation: AutomationSection = AutomationSection()
    deployment: DeploymentSection = DeploymentSection()


_LUDWIG_TOP_KEYS = {
    "model_type",
    "input_features",
    "output_features",
    "combiner",
    "trainer",
    "preprocessing",
    "hyperopt",
    "defaults",
    "backend",
    "ludwig_version",
}
_LUDWIG_FEATURE_TYPES = {"number", "category", "binary", "text", "set", "bag", "date", "vector"}


class LudwigFeature(BaseModel):
    """One Ludwig input or output feature: only name and type are checked here."""

    model_config = ConfigDict(extra="allow")

    name: str
    type: str

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in _LUDWIG_FEATURE_TYPES:
            raise ValueError(
                f"unknown feature type {value!r}; use one of {sorted(_LUDWIG_FEATURE_TYPES)}"
            )
        return value


class LudwigConfigFile(BaseModel):
    """The shape of `config/ludwig_config.yaml`; Ludwig validates the details at train time."""

    model_config = ConfigDict(extra="forbid")

    model_type: Literal["ecd"] = "ecd"
    input_features: list[LudwigFeature] | None = None
    output_features: list[LudwigFeature] | None = None
    combiner: dict[str, Any] = Field(default_factory=lambda: {"type": "concat"})
    trainer: dict[str, Any] = Field(default_factory=dict)
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    hyperopt: dict[str, Any] | None = None
    defaults: dict[str, Any] | None = None
    backend: dict[str, Any] | None = None
    ludwig_version: str | None = None

    def to_ludwig_dict(self) -> dict[str, Any]:
        """Return the config as the plain dict Ludwig takes, without unset optional keys."""
        return self.model_dump(mode="json", exclude_none=True)


def _format_errors(file: Path, err: ValidationError, prefix: str = "") -> ConfigError:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if prefix:
        key = f"{prefix}.{key}" if key else prefix
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check its spelling and section)"
    more = len(err.errors()) - 1
    if more:
        msg += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(file, key or None, msg)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(path, None, "file not found")
    if not path.is_file():
        raise ConfigError(path, None, "not a file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", exc)
        raise ConfigError(path, None, f"invalid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, "not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read it: {exc.strerror}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(path, None, f"expected a mapping at the top, found {type(raw).__name__}")
    return raw


def project_dir_for(config_path: Path) -> Path:
    """Return the folder that relative paths in `config_path` resolve against."""
    parent = config_path.resolve().parent
    return parent.parent if parent.name == "config" else parent


class Settings:
    """A validated config plus the resolved paths and URIs every component uses."""

    def __init__(
        self,
        config_path: Path,
        config: AppConfig,
        ludwig: LudwigConfigFile,
        *,
        tracking_uri: str | None = None,
        lifecycle_db_url: str | None = None,
    ) -> None:
        self.config_path = config_path.resolve()
        self.config = config
        self.ludwig = ludwig
        self.project_dir = project_dir_for(self.config_path)
        self._tracking_uri = tracking_uri
        self._lifecycle_db_url = lifecycle_db_url

    def with_overrides(
        self, *, tracking_uri: str | None = None, lifecycle_db_url: str | None = None
    ) -> Settings:
        """A copy whose MLflow URI and/or store URL win over env and config."""
        return Settings(
            self.config_path,
            self.config,
            self.ludwig,
            tracking_uri=tracking_uri or self._tracking_uri,
            lifecycle_db_url=lifecycle_db_url or self._lifecycle_db_url,
        )

    def resolve(self, path: Path) -> Path:
        """Resolve a config path against the project directory."""
        return path if path.is_absolute() else (self.project_dir / path).resolve()

    @cached_property
    def home(self) -> Path:
        """The state directory (`MLOPS_HOME`, default `<project>/.mlops`)."""
        env = os.environ.get("MLOPS_HOME")
        return Path(env).resolve() if env else self.project_dir / ".mlops"

    @property
    def raw_dir(self) -> Path:
        """Where raw CSV files land."""
        return self.resolve(self.config.data.raw_dir)

    @property
    def quarantine_dir(self) -> Path:
        """Where rejected data files and their reports go."""
        return self.resolve(self.config.data.quarantine_dir)

    @property
    def labels_dir(self) -> Path:
        """Where label files for served predictions arrive."""
        return self.resolve(self.config.data.labels_dir)

    @property
    def ludwig_config_path(self) -> Path:
        """The Ludwig config file."""
        return self.resolve(self.config.ludwig.config_path)

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: override, env, config, then SQLite under MLOPS_HOME."""
        if self._tracking_uri:
            return self._tracking_uri
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        if self.config.mlflow.tracking_uri:
            return self.config.mlflow.tracking_uri
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        """Where MLflow artifacts go when the tracking store is local."""
        return self.home / "mlartifacts"

    @property
    def lifecycle_db_url(self) -> str:
        """SQLAlchemy URL of the lifecycle store: override, env, config, then SQLite."""
        if self._lifecycle_db_url:
            return self._lifecycle_db_url
        env = os.environ.get("MLOPS_LIFECYCLE_DB")
        if env:
            return env
        if self.config.lifecycle_store.url:
            return self.config.lifecycle_store.url
        return f"sqlite:///{self.home / 'lifecycle.db'}"

    @property
    def model_name(self) -> str:
        """Registered model name."""
        return self.config.mlflow.registered_model_name

    @property
    def policy(self) -> ChampionChallengerPolicy:
        """The champion-challenger policy."""
        return self.config.champion_challenger

    def ludwig_config_hash(self) -> str:
        """sha256 of the Ludwig config as validated (stable key order), and of the search.

        With `ludwig.hyperopt.enabled` the search settings are part of it: a challenger found by
        a search is not the same training as one from the file's config alone.
        """
        config: dict[str, Any] = self.ludwig.to_ludwig_dict()
        hp = self.config.ludwig.hyperopt
        if hp.enabled:
            config = {"ludwig": config, "hyperopt": hp.model_dump(mode="json")}
        blob = json.dumps(config, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def ensure_dirs(self) -> None:
        """Create the state and data folders if they are missing."""
        for path in (
            self.home,
            self.artifact_root,
            self.raw_dir,
            self.quarantine_dir,
            self.labels_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)


def default_config_path() -> Path:
    """`MLOPS_CONFIG` when set, else `config/config.yaml` under the working directory."""
    return Path(os.environ.get("MLOPS_CONFIG", DEFAULT_CONFIG))


ENV_PREFIX = "MLOPS__"


def apply_env_overrides(raw: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    """Apply `MLOPS__SECTION__KEY=value` variables to the raw config; return the keys set.

    Values are parsed as YAML (`30s`, `0.1`, `[accuracy, f1_score]`, `true`), so any key can be
    overridden for one run without editing the file, e.g.
    `MLOPS__CHAMPION_CHALLENGER__SHADOW_MODE_DURATION=90s`.
    """
    env = os.environ if environ is None else environ
    applied = []
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__") if k]
        if not keys:
            continue
        node = raw
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        try:
            node[keys[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            node[keys[-1]] = value
        applied.append(".".join(keys))
    return applied


def load_settings(config_path: Path | str | None = None) -> Settings:
    """Load and validate both config files; raise ConfigError naming file and key.

    `MLOPS__SECTION__KEY` environment variables override single keys (see apply_env_overrides).
    """
    path = Path(config_path) if config_path else default_config_path()
    raw = _read_yaml(path)
    overridden = apply_env_overrides(raw)
    try:
        config = AppConfig.model_validate(raw)
    except ValidationError as err:
        error = _format_errors(path, err)
        if error.key in overridden:
            error = ConfigError(
                path,
                error.key,
                f"{error.message} (from {ENV_PREFIX}{error.key.replace('.', '__').upper()})",
            )
        raise error from None
    settings_dir = project_dir_for(path)
    lpath = config.ludwig.config_path
    lpath = lpath if lpath.is_absolute() else settings_dir / lpath
    if not lpath.is_file():
        what = "is not a file" if lpath.exists() else "not found"
        raise ConfigError(path, "ludwig.config_path", f"{lpath} {what}")
    lraw = _read_yaml(lpath)
    unknown = sorted(set(lraw) - _LUDWIG_TOP_KEYS)
    if unknown:
        raise ConfigError(lpath, unknown[0], "unknown key (not a Ludwig config section)")
    try:
        ludwig = LudwigConfigFile.model_validate(lraw)
    except ValidationError as err:
        raise _format_errors(lpath, err) from None
    return Settings(path, config, ludwig)
