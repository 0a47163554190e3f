"""Raw-file validation and quarantine: every bad-file case is reported, nothing is deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mlops_assets.datagen import generate_frame, write_dataset
from mlops_assets.lifecycle.schema import FeatureSpec, InputSchema, infer_schema
from mlops_assets.quarantine import quarantine
from mlops_assets.settings import DataConfig, load_settings
from mlops_assets.validation import (
    ValidationResult,
    build_schema,
    file_sha256,
    list_raw_files,
    validate_file,
)

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_config() -> DataConfig:
    """The data section of the sample config (min_rows 50, rules for age, contract, ...)."""
    return load_settings(PROJECT / "config" / "config.yaml").config.data


@pytest.fixture
def good_frame() -> pd.DataFrame:
    """A small valid frame from the sample-data generator."""
    return generate_frame(120, seed=9)


def _write(tmp_path: Path, frame: pd.DataFrame, name: str = "data.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _checks(result: ValidationResult) -> set[tuple[str, str | None]]:
    return {(p.check, p.column) for p in result.problems}


def _assert_fails(result: ValidationResult, check: str, column: str | None = None) -> None:
    assert not result.ok
    assert result.frame is None
    assert (check, column) in _checks(result), result.problems
    problem = next(p for p in result.problems if (p.check, p.column) == (check, column))
    assert problem.message


def test_a_generated_file_passes(tmp_path: Path, data_config: DataConfig) -> None:
    path = write_dataset(tmp_path, 300, seed=2)
    result = validate_file(path, data_config)
    assert result.ok, result.problems
    assert result.problems == []
    assert result.rows == 300
    assert result.sha256 == file_sha256(path)
    assert result.frame is not None and len(result.frame) == 300
    assert pd.api.types.is_numeric_dtype(result.frame["age"])
    assert result.frame["avg_session_minutes"].isna().any()  # a few missing values are fine


def test_a_drift_file_passes(tmp_path: Path, data_config: DataConfig) -> None:
    result = validate_file(write_dataset(tmp_path, 300, seed=2, drift=True), data_config)
    assert result.ok, result.problems


def test_passes_against_its_own_inferred_reference(tmp_path: Path, data_config: DataConfig) -> None:
    first = validate_file(write_dataset(tmp_path / "a", 300, seed=2), data_config)
    assert first.frame is not None
    reference = infer_schema(first.frame, "target")
    second = validate_file(
        write_dataset(tmp_path / "b", 300, seed=3, drift=True), data_config, reference
    )
    assert second.ok, second.problems


def test_empty_file(tmp_path: Path, data_config: DataConfig) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    result = validate_file(path, data_config)
    _assert_fails(result, "empty_file")
    assert result.sha256 == file_sha256(path)


def test_header_only(tmp_path: Path, data_config: DataConfig, good_frame: pd.DataFrame) -> None:
    result = validate_file(_write(tmp_path, good_frame.head(0)), data_config)
    _assert_fails(result, "no_data_rows")
    assert result.rows == 0


def test_header_only_without_target_names_the_column(
    tmp_path: Path, data_config: DataConfig
) -> None:
    path = tmp_path / "h.csv"
    path.write_text("age,contract\n", encoding="utf-8")
    result = validate_file(path, data_config)
    _assert_fails(result, "no_data_rows")
    _assert_fails(result, "required_column", "target")


def test_non_utf8_bytes(tmp_path: Path, data_config: DataConfig, good_frame: pd.DataFrame) -> None:
    path = _write(tmp_path, good_frame)
    text = path.read_text(encoding="utf-8").replace("north", "n\u00f6rth", 1)
    path.write_bytes(text.encode("latin-1"))
    result = validate_file(path, data_config)
    _assert_fails(result, "encoding")
    assert "line" in result.problems[0].message


def test_not_parseable_csv(tmp_path: Path, data_config: DataConfig) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b,target\n1,2,0\n3,4,1,5,6\n", encoding="utf-8")
    _assert_fails(validate_file(path, data_config), "csv_parse")


def test_binary_garbage(tmp_path: Path, data_config: DataConfig) -> None:
    path = tmp_path / "model.csv"
    path.write_bytes(bytes(range(256)) * 4)
    result = validate_file(path, data_config)
    assert not result.ok
    assert result.problems[0].check == "encoding"


def test_missing_target(tmp_path: Path, data_config: DataConfig, good_frame: pd.DataFrame) -> None:
    result = validate_file(_write(tmp_path, good_frame.drop(columns="target")), data_config)
    _assert_fails(result, "required_column", "target")


def test_missing_configured_column(
    tmp_path: Path, data_config: DataConfig, good_frame: pd.DataFrame
) -> None:
    result = validate_file(_write(tmp_path, good_frame.drop(columns="contract")), data_config)
    _assert_fails(result, "required_column", "contract")


def test_text_in_numeric_column(
    tmp_path: Path, data_config: DataConfig, good_frame: pd.DataFrame
) -> None:
    frame = good_frame.astype({"age": object})
    frame.loc[5, "age"] = "forty"
    result = validate_file(_write(tmp_path, frame), data_config)
    _assert_fails(result, "dtype", "age")
    problem = next(p for p in result.problems if p.check == "dtype")
    assert problem.count == 1
    assert problem.examples == ["line 7: 'forty'"]
    # The bad value is reported once, not again as a range failure.
    assert ("max", "age") not in _checks(result)


def test_too_few_rows(tmp_path: Path, data_config: DataConfig, good_frame: pd.DataFrame) -> None:
    result = validate_file(_write(tmp_path, good_frame.head(20)), data_config)
    _assert_fails(result, "min_rows")
    assert result.rows == 20


def test_single_class_target(
    tmp_path: Path, data_config: DataConfig, good_frame: pd.DataFrame
) -> None:
    result = validate_file(_write(tmp_path, good_frame.assign(target=1)), data_config)
    _assert_fails(result, "target_classes", "target")


def test_empty_target_values(
    tmp_path: Path, data_config: DataConfig, good_frame: pd.DataFrame
) -> None:
    frame = good_frame.astype({"target": "Int64"})
    frame.loc[[3, 4], "target"] = pd.NA
    result = validate_file(_write(tmp_path, frame), data_config)
    _assert_fails(result, "not_null", "target")


def test_values_out_of_range(
    tmp_path: Path, data_config: DataConfig, good_frame: pd.DataFrame
) -> None:
    frame = good_frame.copy()
    frame.loc[0, "age"] = 150
    frame.loc[1, "age"] = 3
    frame.loc[2, "monthly_charges"] = -5.0
    result = validate_file(_write(tmp_path, frame), data_config)
    _assert_fails(result, "max", "age")
    _assert_fails(result, "min", "age")
    _assert_fails(result, "min", "monthly_charges")
    max_age = next(p for p in result.problems if (p.check, p.column) == ("max", "age"))
    assert max_age.examples == ["line 2: 150"]


def test_unknown_category(
    tmp_path: Path, data_config: DataConfig, good_frame: pd.DataFrame
) -> None:
    frame = good_frame.copy()
    frame.loc[10, "contract"] = "weekly"
    result = validate_file(_write(tmp_path, frame), data_config)
    _assert_fails(result, "categories", "contract")
    assert "weekly" in result.problems[0].examples[0]


def test_missing_value_in_a_non_nullable_column(
    tmp_path: Path, data_config: DataConfig, good_frame: pd.DataFrame
) -> None:
    frame = good_frame.copy()
    frame.loc[10, "contract"] = None
    _assert_fails(validate_file(_write(tmp_path, frame), data_config), "not_null", "contract")


def test_too_many_missing_values(
    tmp_path: Path, data_config: DataConfig, good_frame: pd.DataFrame
) -> None:
    frame = good_frame.copy()
    frame.loc[: len(frame) // 2, "data_usage_gb"] = None
    result = validate_file(_write(tmp_path, frame), data_config)
    _assert_fails(result, "max_missing_fraction", "data_usage_gb")
    # An unconfigured column is checked too, and the limit comes from the config.
    relaxed = data_config.model_copy(update={"max_missing_fraction": 0.9})
    assert validate_file(tmp_path / "data.csv", relaxed).ok


def test_duplicate_column_names(
    tmp_path: Path, data_config: DataConfig, good_frame: pd.DataFrame
) -> None:
    path = _write(tmp_path, good_frame)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0].replace("region", "age")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _assert_fails(validate_file(path, data_config), "duplicate_columns", "age")


def test_missing_file_is_reported_not_raised(tmp_path: Path, data_config: DataConfig) -> None:
    result = validate_file(tmp_path / "nope.csv", data_config)
    _assert_fails(result, "readable")


def test_every_failing_check_is_collected(
    tmp_path: Path, data_config: DataConfig, good_frame: pd.DataFrame
) -> None:
    frame = good_frame.head(30).astype({"age": object}).assign(target=0)
    frame.loc[0, "age"] = "x"
    frame.loc[1, "tenure_months"] = 500
    frame.loc[2, "contract"] = "lifetime"
    result = validate_file(_write(tmp_path, frame), data_config)
    assert {
        ("min_rows", None),
        ("dtype", "age"),
        ("max", "tenure_months"),
        ("categories", "contract"),
        ("target_classes", "target"),
    } <= _checks(result)


def test_reference_schema_columns_and_types(tmp_path: Path, good_frame: pd.DataFrame) -> None:
    data = DataConfig()  # no configured rules: only the champion's schema applies
    reference = InputSchema(
        target="target",
        classes=["0", "1"],
        features=[
            FeatureSpec(name="age", type="number"),
            FeatureSpec(name="region", type="category"),
            FeatureSpec(name="loyalty_card", type="binary"),
        ],
    )
    frame = good_frame.astype({"age": object})
    frame.loc[0, "age"] = "old"
    result = validate_file(_write(tmp_path, frame), data, reference)
    _assert_fails(result, "required_column", "loyalty_card")
    _assert_fails(result, "dtype", "age")

    ok = good_frame.assign(loyalty_card=["yes", "no"] * 60)
    assert validate_file(_write(tmp_path, ok, "ok.csv"), data, reference).ok
    bad = good_frame.assign(loyalty_card=["yes", "no", "maybe"] * 40)
    _assert_fails(
        validate_file(_write(tmp_path, bad, "bad.csv"), data, reference),
        "binary_values",
        "loyalty_card",
    )


def test_reference_target_classes(tmp_path: Path, good_frame: pd.DataFrame) -> None:
    reference = InputSchema(
        target="target",
        classes=["False", "True"],
        features=[FeatureSpec(name="age", type="number")],
    )
    # 0/1 labels match False/True classes.
    assert validate_file(_write(tmp_path, good_frame), DataConfig(), reference).ok
    frame = good_frame.copy()
    frame.loc[0, "target"] = 2
    result = validate_file(_write(tmp_path, frame, "three.csv"), DataConfig(), reference)
    _assert_fails(result, "target_known_classes", "target")


def test_build_schema_lists_the_configured_columns(data_config: DataConfig) -> None:
    schema = build_schema(data_config)
    assert {"target", "age", "tenure_months", "monthly_charges", "contract"} <= set(schema.columns)
    assert schema.columns["contract"].nullable is False
    assert schema.columns["target"].nullable is False


# --- quarantine ---------------------------------------------------------------------------


def _bad_file(folder: Path, content: str = "a,b\n1,2\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "incoming.csv"
    path.write_text(content, encoding="utf-8")
    return path


def test_quarantine_moves_the_file_and_writes_reports(
    tmp_path: Path, data_config: DataConfig
) -> None:
    path = _bad_file(tmp_path / "raw")
    original = path.read_bytes()
    result = validate_file(path, data_config)
    assert not result.ok
    qdir = tmp_path / "quarantine"
    moved = quarantine(result, qdir)

    assert moved == qdir / "incoming.csv"
    assert not path.exists()
    assert moved.read_bytes() == original
    report = json.loads((qdir / "incoming.csv.report.json").read_text(encoding="utf-8"))
    assert report["sha256"] == result.sha256
    assert report["time_utc"].endswith("+00:00")
    assert {(p["check"], p["column"]) for p in report["problems"]} == _checks(result)
    markdown = (qdir / "incoming.csv.report.md").read_text(encoding="utf-8")
    assert "| check | column | problem | examples |" in markdown
    for problem in result.problems:
        assert problem.check in markdown


def test_quarantine_twice_with_the_same_result_is_harmless(
    tmp_path: Path, data_config: DataConfig
) -> None:
    result = validate_file(_bad_file(tmp_path / "raw"), data_config)
    qdir = tmp_path / "quarantine"
    first = quarantine(result, qdir)
    second = quarantine(result, qdir)
    assert first == second
    assert sorted(p.name for p in qdir.iterdir()) == [
        "incoming.csv",
        "incoming.csv.report.json",
        "incoming.csv.report.md",
    ]


def test_quarantine_never_overwrites_a_same_named_file(
    tmp_path: Path, data_config: DataConfig
) -> None:
    qdir = tmp_path / "quarantine"
    first = quarantine(validate_file(_bad_file(tmp_path / "raw"), data_config), qdir)
    second_path = _bad_file(tmp_path / "raw", "x,y\n3,4\n")
    second_result = validate_file(second_path, data_config)
    second = quarantine(second_result, qdir)

    assert first != second
    assert second.name == f"{second_result.sha256[:12]}_incoming.csv"
    assert first.read_text(encoding="utf-8") == "a,b\n1,2\n"
    assert second.read_text(encoding="utf-8") == "x,y\n3,4\n"
    assert (qdir / f"{second.name}.report.json").exists()
    assert (qdir / f"{second.name}.report.md").exists()
    assert (qdir / "incoming.csv.report.json").exists()

    # A third copy with the same name and the same bytes as the second still loses nothing.
    third = quarantine(validate_file(_bad_file(tmp_path / "raw", "x,y\n3,4\n"), data_config), qdir)
    assert third not in (first, second)
    assert len([p for p in qdir.iterdir() if p.suffix == ".csv"]) == 3


def test_list_raw_files(tmp_path: Path) -> None:
    for name in ["b.csv", "a.csv", ".hidden.csv", ".gitkeep", "notes.txt", "C.CSV"]:
        (tmp_path / name).write_text("x\n", encoding="utf-8")
    (tmp_path / "dir.csv").mkdir()
    assert [p.name for p in list_raw_files(tmp_path)] == ["C.CSV", "a.csv", "b.csv"]
    assert list_raw_files(tmp_path / "missing") == []
