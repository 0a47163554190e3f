"""The config loader: every problem is a ConfigError naming the file and the dotted key."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from mlops_assets.datagen import CATEGORICAL_COLUMNS, NUMERIC_COLUMNS, TARGET_COLUMN
from mlops_assets.settings import (
    ConfigError,
    Settings,
    default_config_path,
    format_duration,
    load_settings,
    parse_duration,
    project_dir_for,
)

REPO = Path(__file__).resolve().parents[2]

MakeProject = Callable[..., Path]


def _config(root: Path) -> Path:
    return root / "config" / "config.yaml"


def _ludwig(root: Path) -> Path:
    return root / "config" / "ludwig_config.yaml"


def _raises(path: Path, file: Path, key: str | None) -> ConfigError:
    """Load `path`; assert a ConfigError whose message names `file` and `key`."""
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    err = info.value
    assert str(file) in str(err), str(err)
    assert err.file == str(file)
    if key is not None:
        assert err.key == key, str(err)
        assert f": {key}: " in str(err), str(err)
    return err


# ------------------------------------------------------------------ shipped configs


def test_shipped_config_files_validate(clean_env: None) -> None:
    settings = load_settings(REPO / "config" / "config.yaml")
    assert settings.project_dir == REPO
    assert settings.ludwig_config_path == REPO / "config" / "ludwig_config.yaml"
    policy = settings.policy
    assert policy.primary_metric in policy.evaluation_metrics
    assert policy.shadow_mode_duration == timedelta(days=14)
    assert policy.champion_threshold == pytest.approx(0.05)
    assert policy.auto_promotion is True
    split = settings.config.data.split
    assert split.train + split.validation + split.holdout == pytest.approx(1.0)


def test_shipped_ludwig_config_matches_the_sample_data(clean_env: None) -> None:
    ludwig = load_settings(REPO / "config" / "config.yaml").ludwig.to_ludwig_dict()
    assert ludwig["model_type"] == "ecd"
    inputs = {f["name"]: f["type"] for f in ludwig["input_features"]}
    assert inputs == {
        **dict.fromkeys(NUMERIC_COLUMNS, "number"),
        **dict.fromkeys(CATEGORICAL_COLUMNS, "category"),
    }
    assert ludwig["output_features"] == [{"name": TARGET_COLUMN, "type": "binary"}]


def test_ludwig_config_hash_is_stable_and_tracks_content(make_project: MakeProject) -> None:
    a = load_settings(_config(make_project(name="a")))
    b = load_settings(_config(make_project(name="b")))
    c = load_settings(_config(make_project(ludwig={"trainer": {"epochs": 3}}, name="c")))
    assert a.ludwig_config_hash() == b.ludwig_config_hash()
    assert a.ludwig_config_hash() != c.ludwig_config_hash()


# ------------------------------------------------------------- errors in config.yaml


def test_unknown_top_level_key(make_project: MakeProject) -> None:
    root = make_project(config={"serveing": {"port": 1}})
    err = _raises(_config(root), _config(root), "serveing")
    assert "unknown key" in err.message


def test_unknown_nested_key_is_named_with_its_section(make_project: MakeProject) -> None:
    root = make_project(config={"champion_challenger": {"champion_treshold": 0.1}})
    err = _raises(_config(root), _config(root), "champion_challenger.champion_treshold")
    assert "unknown key" in err.message


def test_unknown_key_deep_in_data_split(make_project: MakeProject) -> None:
    root = make_project(config={"data": {"split": {"test": 0.1}}})
    _raises(_config(root), _config(root), "data.split.test")


def test_wrong_type(make_project: MakeProject) -> None:
    root = make_project(config={"champion_challenger": {"champion_threshold": "a lot"}})
    err = _raises(_config(root), _config(root), "champion_challenger.champion_threshold")
    assert "number" in err.message


def test_out_of_range_value(make_project: MakeProject) -> None:
    root = make_project(config={"champion_challenger": {"shadow_traffic_percent": 150}})
    err = _raises(_config(root), _config(root), "champion_challenger.shadow_traffic_percent")
    assert "100" in err.message


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("error_rate_tolerance", -0.01),
        ("error_rate_tolerance", 1.5),
        ("max_latency_ratio", 0),
        ("max_error_rate", 2),
    ],
)
def test_outcome_constants_are_validated(make_project: MakeProject, key: str, bad: float) -> None:
    root = make_project(config={"champion_challenger": {key: bad}})
    _raises(_config(root), _config(root), f"champion_challenger.{key}")


def test_wrong_literal_value(make_project: MakeProject) -> None:
    root = make_project(config={"champion_challenger": {"improvement": "percent"}})
    err = _raises(_config(root), _config(root), "champion_challenger.improvement")
    assert "absolute" in err.message and "relative" in err.message


def test_several_problems_report_the_first_and_count_the_rest(make_project: MakeProject) -> None:
    root = make_project(
        config={"champion_challenger": {"champion_threshold": "x", "max_shadows": 0}}
    )
    err = _raises(_config(root), _config(root), None)
    assert err.key is not None and err.key.startswith("champion_challenger.")
    assert "1 more problem" in err.message


def test_null_section_is_a_clear_error(make_project: MakeProject) -> None:
    root = make_project()
    _config(root).write_text("champion_challenger:\n")
    err = _raises(_config(root), _config(root), "champion_challenger")
    assert "dictionary" in err.message


def test_missing_config_file(make_project: MakeProject) -> None:
    root = make_project()
    missing = root / "config" / "nope.yaml"
    err = _raises(missing, missing, None)
    assert "not found" in err.message


def test_invalid_yaml_names_the_line(make_project: MakeProject) -> None:
    root = make_project()
    _config(root).write_text("data:\n  raw_dir: data/raw\n  split: {train: 0.7\n  x: 1\n")
    err = _raises(_config(root), _config(root), None)
    assert "invalid YAML" in err.message
    assert "line 4" in err.message


def test_tab_indentation_is_invalid_yaml_with_line(make_project: MakeProject) -> None:
    root = make_project()
    _config(root).write_text("data:\n\traw_dir: x\n")
    err = _raises(_config(root), _config(root), None)
    assert "line 2" in err.message


@pytest.mark.parametrize(
    ("text", "found"), [("- a\n- b\n", "list"), ("just a string\n", "str"), ("42\n", "int")]
)
def test_non_mapping_yaml(make_project: MakeProject, text: str, found: str) -> None:
    root = make_project()
    _config(root).write_text(text)
    err = _raises(_config(root), _config(root), None)
    assert "mapping" in err.message and found in err.message


def test_empty_config_file_means_all_defaults(make_project: MakeProject) -> None:
    root = make_project()
    _config(root).write_text("# nothing set\n")
    settings = load_settings(_config(root))
    assert settings.policy.champion_threshold == pytest.approx(0.05)
    assert settings.policy.evaluation_metrics == ["accuracy", "precision", "recall", "f1_score"]


def test_primary_metric_must_be_evaluated(make_project: MakeProject) -> None:
    root = make_project(config={"champion_challenger": {"primary_metric": "mcc"}})
    with pytest.raises(ConfigError) as info:
        load_settings(_config(root))
    text = str(info.value)
    assert str(_config(root)) in text
    assert "champion_challenger" in text
    assert "primary_metric" in text and "'mcc'" in text and "evaluation_metrics" in text


def test_primary_metric_error_names_the_dotted_key(make_project: MakeProject) -> None:
    root = make_project(config={"champion_challenger": {"primary_metric": "mcc"}})
    _raises(_config(root), _config(root), "champion_challenger.primary_metric")


def test_empty_evaluation_metrics(make_project: MakeProject) -> None:
    root = make_project(config={"champion_challenger": {"evaluation_metrics": []}})
    err = _raises(_config(root), _config(root), "champion_challenger.evaluation_metrics")
    assert "at least one" in err.message


@pytest.mark.parametrize(
    "split",
    [
        {"train": 0.5, "validation": 0.1, "holdout": 0.2},
        {"train": 0.8, "validation": 0.1, "holdout": 0.2},
    ],
)
def test_split_fractions_must_sum_to_one(make_project: MakeProject, split: dict) -> None:
    root = make_project(config={"data": {"split": split}})
    err = _raises(_config(root), _config(root), "data.split")
    assert "must be 1.0" in err.message


# ---------------------------------------------------------- errors in the Ludwig file


def test_missing_ludwig_config_file(make_project: MakeProject) -> None:
    root = make_project(config={"ludwig": {"config_path": "config/missing.yaml"}})
    with pytest.raises(ConfigError) as info:
        load_settings(_config(root))
    assert str(root / "config" / "missing.yaml") in str(info.value)
    assert "not found" in str(info.value)


def test_missing_ludwig_config_names_the_key_that_points_to_it(make_project: MakeProject) -> None:
    root = make_project(config={"ludwig": {"config_path": "config/missing.yaml"}})
    with pytest.raises(ConfigError) as info:
        load_settings(_config(root))
    assert "ludwig.config_path" in str(info.value)


def test_ludwig_config_path_that_is_a_folder(make_project: MakeProject) -> None:
    root = make_project(config={"ludwig": {"config_path": "data"}})
    with pytest.raises(ConfigError) as info:
        load_settings(_config(root))
    assert str(root / "data") in str(info.value)


def test_unknown_ludwig_top_level_key(make_project: MakeProject) -> None:
    root = make_project(ludwig={"trainers": {"epochs": 1}})
    err = _raises(_config(root), _ludwig(root), "trainers")
    assert "unknown key" in err.message


def test_unknown_ludwig_feature_type(make_project: MakeProject) -> None:
    root = make_project()
    lud = yaml.safe_load(_ludwig(root).read_text())
    lud["input_features"][2]["type"] = "numeric"
    _ludwig(root).write_text(yaml.safe_dump(lud))
    err = _raises(_config(root), _ludwig(root), "input_features.2.type")
    assert "'numeric'" in err.message and "number" in err.message


def test_ludwig_model_type_must_be_ecd(make_project: MakeProject) -> None:
    root = make_project(ludwig={"model_type": "gbm"})
    _raises(_config(root), _ludwig(root), "model_type")


def test_ludwig_feature_needs_a_name(make_project: MakeProject) -> None:
    root = make_project()
    _ludwig(root).write_text("output_features:\n  - {type: binary}\n")
    _raises(_config(root), _ludwig(root), "output_features.0.name")


def test_invalid_ludwig_yaml_names_the_ludwig_file(make_project: MakeProject) -> None:
    root = make_project()
    _ludwig(root).write_text("trainer:\n  epochs: [1\n")
    err = _raises(_config(root), _ludwig(root), None)
    assert "invalid YAML" in err.message and "line" in err.message


def test_non_mapping_ludwig_yaml(make_project: MakeProject) -> None:
    root = make_project()
    _ludwig(root).write_text("- input_features\n")
    err = _raises(_config(root), _ludwig(root), None)
    assert "mapping" in err.message


def test_ludwig_input_features_may_be_left_out(make_project: MakeProject) -> None:
    root = make_project(ludwig={"input_features": None})
    settings = load_settings(_config(root))
    assert "input_features" not in settings.ludwig.to_ludwig_dict()


# ------------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("14d", timedelta(days=14)),
        ("6h", timedelta(hours=6)),
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2w", timedelta(weeks=2)),
        ("1.5", timedelta(days=1.5)),
        (1.5, timedelta(days=1.5)),
        (3, timedelta(days=3)),
        ("0", timedelta(0)),
        (0, timedelta(0)),
        (" 6h ", timedelta(hours=6)),
        (timedelta(minutes=5), timedelta(minutes=5)),
    ],
)
def test_parse_duration(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "bad", ["14 days", "-1d", "d", "", "1.5.2h", "6y", "fourteen", True, -1, None, [14]]
)
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize("text", ["14d", "6h", "90s", "30m", "0", "1.5"])
def test_format_duration_round_trips(text: str) -> None:
    value = parse_duration(text)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("shadow_mode_duration", "6h", timedelta(hours=6)),
        ("shadow_mode_duration", "90s", timedelta(seconds=90)),
        ("shadow_mode_duration", 0, timedelta(0)),
        ("shadow_mode_duration", 1.5, timedelta(days=1.5)),
        ("probation_period", "2w", timedelta(weeks=2)),
    ],
)
def test_durations_in_config(
    make_project: MakeProject, key: str, text: object, expected: timedelta
) -> None:
    root = make_project(config={"champion_challenger": {key: text}})
    policy = load_settings(_config(root)).policy
    assert getattr(policy, key) == expected
    # Serialised the way the config accepts it, so a dump can be loaded again.
    dumped = policy.model_dump(mode="json")[key]
    assert isinstance(dumped, str)
    assert parse_duration(dumped) == expected


@pytest.mark.parametrize("bad", ["14 days", "-3h", True, -2])
def test_bad_duration_in_config(make_project: MakeProject, bad: object) -> None:
    root = make_project(config={"champion_challenger": {"shadow_mode_duration": bad}})
    err = _raises(_config(root), _config(root), "champion_challenger.shadow_mode_duration")
    assert "duration" in err.message


def test_bad_retention_duration_in_automation(make_project: MakeProject) -> None:
    root = make_project(config={"automation": {"retention": "forever"}})
    err = _raises(_config(root), _config(root), "automation.retention")
    assert "'forever'" in err.message


@pytest.mark.parametrize("huge", [float("inf"), "99999999999d"])
def test_overflowing_duration_is_a_config_error(make_project: MakeProject, huge: object) -> None:
    root = make_project(config={"champion_challenger": {"shadow_mode_duration": huge}})
    _raises(_config(root), _config(root), "champion_challenger.shadow_mode_duration")


# -------------------------------------------------------- environment and default paths


def test_mlops_config_env_is_the_default_path(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = make_project(config={"mlflow": {"experiment_name": "from-env"}})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLOPS_CONFIG", str(_config(root)))
    assert default_config_path() == _config(root)
    settings = load_settings()
    assert settings.config_path == _config(root)
    assert settings.config.mlflow.experiment_name == "from-env"


def test_without_mlops_config_the_working_directory_config_is_used(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(config={"mlflow": {"experiment_name": "from-cwd"}})
    monkeypatch.chdir(root)
    assert default_config_path() == Path("config/config.yaml")
    assert load_settings().config.mlflow.experiment_name == "from-cwd"


def test_missing_default_config_names_the_path(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"config/config\.yaml.*not found"):
        load_settings()


def test_default_home_and_stores_are_sqlite_under_home(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project()
    monkeypatch.delenv("MLOPS_HOME")
    settings = load_settings(_config(root))
    assert settings.home == root / ".mlops"
    assert settings.tracking_uri == f"sqlite:///{root / '.mlops' / 'mlflow.db'}"
    assert settings.lifecycle_db_url == f"sqlite:///{root / '.mlops' / 'lifecycle.db'}"
    assert settings.artifact_root == root / ".mlops" / "mlartifacts"


def test_mlops_home_env_moves_the_state_and_the_sqlite_stores(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = make_project()
    home = tmp_path / "elsewhere" / "state"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    settings = load_settings(_config(root))
    assert settings.home == home
    assert settings.tracking_uri == f"sqlite:///{home / 'mlflow.db'}"
    assert settings.lifecycle_db_url == f"sqlite:///{home / 'lifecycle.db'}"
    settings.ensure_dirs()
    assert (home / "mlartifacts").is_dir()
    assert (root / "data" / "raw").is_dir()


def test_tracking_uri_precedence(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(config={"mlflow": {"tracking_uri": "http://127.0.0.1:5000"}})
    settings = load_settings(_config(root))
    assert settings.tracking_uri == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert settings.tracking_uri == "http://127.0.0.1:5999"
    override = settings.with_overrides(tracking_uri="sqlite:////tmp/x.db")
    assert override.tracking_uri == "sqlite:////tmp/x.db"
    # An override of the other URL keeps this one.
    assert override.with_overrides(lifecycle_db_url="sqlite:///y").tracking_uri == (
        "sqlite:////tmp/x.db"
    )


def test_lifecycle_db_precedence(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg = "postgresql+psycopg2://mlops@127.0.0.1/lifecycle"
    root = make_project(config={"lifecycle_store": {"url": pg}})
    settings = load_settings(_config(root))
    assert settings.lifecycle_db_url == pg
    monkeypatch.setenv("MLOPS_LIFECYCLE_DB", "sqlite:////tmp/env.db")
    assert settings.lifecycle_db_url == "sqlite:////tmp/env.db"
    assert settings.with_overrides(lifecycle_db_url="sqlite:///o").lifecycle_db_url == (
        "sqlite:///o"
    )


def test_relative_paths_resolve_against_the_project_dir_not_the_cwd(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = make_project(
        config={
            "data": {"raw_dir": "incoming", "quarantine_dir": "q/bad", "labels_dir": "/abs/l"},
            "ludwig": {"config_path": "models/ludwig.yaml"},
        }
    )
    (root / "models").mkdir()
    _ludwig(root).rename(root / "models" / "ludwig.yaml")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(_config(root))
    assert settings.project_dir == root
    assert settings.raw_dir == root / "incoming"
    assert settings.quarantine_dir == root / "q" / "bad"
    assert settings.labels_dir == Path("/abs/l")
    assert settings.ludwig_config_path == root / "models" / "ludwig.yaml"


def test_relative_config_path_argument(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project()
    monkeypatch.chdir(root / "data")
    settings = load_settings(Path("..") / "config" / "config.yaml")
    assert settings.project_dir == root
    assert settings.config_path == _config(root)
    assert settings.raw_dir == root / "data" / "raw"


def test_project_dir_of_a_config_outside_a_config_folder(
    make_project: MakeProject, tmp_path: Path
) -> None:
    root = make_project()
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "settings.yaml").write_text(
        _config(root).read_text().replace("config/ludwig_config.yaml", "ludwig.yaml")
    )
    _ludwig(root).rename(flat / "ludwig.yaml")
    assert project_dir_for(flat / "settings.yaml") == flat
    settings = load_settings(flat / "settings.yaml")
    assert settings.raw_dir == flat / "data" / "raw"
    assert isinstance(settings, Settings)
