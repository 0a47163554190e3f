"""Training windows: which files a challenger trains on, the row cap and the holdout source."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_assets.lifecycle.training import ROW_ID, split_frame
from mlops_assets.lifecycle.window import (
    assemble,
    choose_files,
    data_key,
    training_data,
)
from mlops_assets.settings import ConfigError, SplitConfig, TrainingSection, load_settings
from mlops_assets.validation import ValidationResult, file_sha256

DAY = 86400.0
REPO = Path(__file__).resolve().parents[2]


def write(dir_: Path, name: str, rows: int, age_days: float, seed: int = 0) -> Path:
    """A CSV of `rows` rows whose mtime is `age_days` before a fixed time."""
    rng = np.random.default_rng(seed)
    path = dir_ / name
    pd.DataFrame(
        {
            "x": rng.normal(size=rows).round(4),
            "source": [name] * rows,
            "target": rng.integers(0, 2, size=rows),
        }
    ).to_csv(path, index=False)
    when = 1_800_000_000 - age_days * DAY
    os.utime(path, (when, when))
    return path


def validated(path: Path) -> ValidationResult:
    frame = pd.read_csv(path)
    return ValidationResult(
        path=path, sha256=file_sha256(path), ok=True, rows=len(frame), frame=frame
    )


def window(spec: object, max_rows: int | None = None) -> TrainingSection:
    return TrainingSection.model_validate({"window": spec, "max_rows": max_rows})


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Five daily files, the newest (day0) first in age; `later` is newer than day2."""
    return {
        "day0": write(tmp_path, "day0.csv", 60, 0, 0),
        "day1": write(tmp_path, "day1.csv", 70, 1, 1),
        "day2": write(tmp_path, "day2.csv", 80, 2, 2),
        "day10": write(tmp_path, "day10.csv", 90, 10, 3),
        "day100": write(tmp_path, "day100.csv", 100, 100, 4),
    }


def names(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("latest", ["day2"]),
        ("all", ["day2", "day10", "day100"]),
        ({"last_files": 2}, ["day2", "day10"]),
        ({"last_files": 1}, ["day2"]),
        ({"since": "30d"}, ["day2", "day10"]),
        ({"since": "7d"}, ["day2"]),
    ],
)
def test_each_window_picks_its_files_newest_first(files, spec, expected):
    """The triggering file is first; files newer than it (day0, day1) are never taken."""
    chosen = choose_files(list(files.values()), files["day2"], window(spec).window)
    assert names(chosen) == expected


def test_a_rerun_of_an_old_files_training_picks_the_same_files(files, tmp_path):
    """A file that lands later does not change what an earlier file's window holds."""
    spec = window("all").window
    before = choose_files(list(files.values()), files["day10"], spec)
    later = write(tmp_path, "later.csv", 50, -5)
    after = choose_files([*files.values(), later], files["day10"], spec)
    assert names(before) == names(after) == ["day10", "day100"]


def test_assemble_stacks_newest_first_and_records_every_file(files):
    current = validated(files["day0"])
    older = [validated(files[k]) for k in ("day1", "day2")]
    data = assemble(current, older, window("all"))
    assert len(data.frame) == 60 + 70 + 80
    assert data.current_rows == 60
    assert list(data.frame["source"][:60].unique()) == ["day0.csv"]
    assert [Path(f.path).name for f in data.files] == ["day0.csv", "day1.csv", "day2.csv"]
    assert [f.sha256 for f in data.files] == [
        file_sha256(files[k]) for k in ("day0", "day1", "day2")
    ]
    assert data.data_sha256 == ",".join(f.sha256 for f in data.files)
    assert data.window == "all"


def test_the_row_cap_keeps_the_triggering_file_whole_and_cuts_the_oldest(files):
    current = validated(files["day0"])
    older = [validated(files[k]) for k in ("day1", "day2", "day10")]
    data = assemble(current, older, window("all", max_rows=100))
    assert len(data.frame) == 100
    assert [(Path(f.path).stem, f.rows, f.file_rows) for f in data.files] == [
        ("day0", 60, 60),
        ("day1", 40, 70),  # the last 40 rows of day1
    ]
    day1 = pd.read_csv(files["day1"])
    assert data.frame["x"].iloc[60:].tolist() == day1["x"].tail(40).tolist()
    assert [s.split(":")[0] for s in data.skipped] == ["day2.csv", "day10.csv"]
    # A cap below the triggering file's rows still trains on that whole file.
    assert len(assemble(current, older, window("all", max_rows=10)).frame) == 60


def test_a_file_that_fails_now_or_has_other_columns_is_left_out_with_its_reason(files, tmp_path):
    current = validated(files["day0"])
    failing = ValidationResult(path=files["day1"], sha256="ab", ok=False, rows=0)
    other = tmp_path / "other.csv"
    pd.DataFrame({"y": [1, 2], "target": [0, 1]}).to_csv(other, index=False)
    data = assemble(current, [failing, validated(other), validated(files["day2"])], window("all"))
    assert [Path(f.path).stem for f in data.files] == ["day0", "day2"]
    assert "day1.csv: fails validation now" in data.skipped[0]
    assert "other.csv: its columns differ" in data.skipped[1]


def test_training_data_validates_only_the_chosen_older_files(files):
    seen: list[str] = []

    def check(path: Path) -> ValidationResult:
        seen.append(path.stem)
        return validated(path)

    data = training_data(validated(files["day2"]), list(files.values()), window("all"), check)
    assert seen == ["day10", "day100"]
    assert data.current_rows == 80


def test_the_data_key_changes_with_the_rows_taken_not_only_the_files():
    assert data_key([("a", 10), ("b", 5)]) != data_key([("a", 10), ("b", 4)])
    assert data_key([("a", 10)]) == data_key([("a", 10)])


def test_the_holdout_comes_from_the_triggering_file_only(files):
    current = validated(files["day0"])
    data = assemble(current, [validated(files["day100"])], window("all"))
    split = SplitConfig()
    splits = split_frame(data.frame, split, "target", data.current_rows)
    assert set(splits.holdout["source"]) == {"day0.csv"}
    # Every row is used exactly once, and older rows go to train and validation.
    ids = np.concatenate(
        [s[ROW_ID].to_numpy() for s in (splits.train, splits.validation, splits.holdout)]
    )
    assert sorted(ids) == list(range(len(data.frame)))
    assert (splits.train["source"] == "day100.csv").sum() > 0
    assert (splits.validation["source"] == "day100.csv").sum() > 0
    # The holdout is the one-file holdout: the same rows as training on day0 alone.
    alone = split_frame(current.frame, split, "target")
    assert splits.holdout[ROW_ID].tolist() == alone.holdout[ROW_ID].tolist()
    assert splits.holdout["x"].tolist() == alone.holdout["x"].tolist()


def test_one_file_splits_are_unchanged_by_current_rows(files):
    frame = validated(files["day10"]).frame
    a = split_frame(frame, SplitConfig(), "target")
    b = split_frame(frame, SplitConfig(), "target", len(frame))
    for part in ("train", "validation", "holdout"):
        assert getattr(a, part)[ROW_ID].tolist() == getattr(b, part)[ROW_ID].tolist()


@pytest.mark.parametrize(
    ("yaml", "described"),
    [
        ("window: latest", "latest"),
        ("window: all", "all"),
        ("window: {last_files: 4}", "last_files: 4"),
        ("window: {since: 90d}", "since: 90d"),
    ],
)
def test_config_forms(tmp_path, yaml, described):
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "ludwig_config.yaml", tmp_path / "config")
    cfg = tmp_path / "config" / "config.yaml"
    cfg.write_text(f"training:\n  {yaml}\n")
    assert load_settings(cfg).config.training.window.describe() == described


@pytest.mark.parametrize(
    "yaml", ["window: weekly", "window: {last_files: 0}", "window: {since: soon}", "max_rows: 0"]
)
def test_a_bad_window_names_the_file_and_key(tmp_path, yaml):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"training:\n  {yaml}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert "config.yaml" in str(err.value) and "training" in str(err.value)


def test_the_default_window_is_the_last_90_days_capped():
    section = TrainingSection()
    assert section.window.describe() == "since: 90d"
    assert section.max_rows == 200_000
