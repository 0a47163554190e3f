"""`mlops init`: profiling a table, refusing unusable targets, writing a valid config pair."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from mlops_assets.cli import main
from mlops_assets.project_init import InitError, profile_table, write_project
from mlops_assets.settings import load_settings


def _csv(tmp_path: Path, frame: pd.DataFrame, name: str = "table.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _table(rows: int = 120) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer id": [f"c-{i:05d}" for i in range(rows)],
            "monthly spend": [float(i % 37) for i in range(rows)],
            "plan": [["basic", "plus", "pro"][i % 3] for i in range(rows)],
            "always one": [1] * rows,
            "empty": [None] * rows,
            "churned": ["yes" if i % 4 == 0 else "no" for i in range(rows)],
        }
    )


def test_profile_infers_types_and_leaves_out_useless_columns(tmp_path: Path) -> None:
    profile = profile_table(_csv(tmp_path, _table()), "churned")
    assert profile.target_type == "binary" and profile.classes == ["no", "yes"]
    assert {f.name: f.type for f in profile.features} == {
        "monthly spend": "number",
        "plan": "category",
    }
    assert set(profile.dropped) == {"customer id", "always one", "empty"}
    assert "identifier" in profile.dropped["customer id"]


@pytest.mark.parametrize(
    ("change", "target", "message"),
    [
        (lambda f: f, "nope", "no column 'nope'"),
        (lambda f: f.assign(churned="yes"), "churned", "one value only"),
        (lambda f: f.assign(churned=range(len(f))), "churned", "not regression"),
        (lambda f: f.assign(churned=None), "churned", "empty in every row"),
        (lambda f: f.assign(churned=[None, *f["churned"][1:]]), "churned", "missing in 1 rows"),
    ],
)
def test_an_unusable_target_is_refused_clearly(tmp_path: Path, change, target, message) -> None:
    with pytest.raises(InitError, match=message):
        profile_table(_csv(tmp_path, change(_table())), target)


def test_the_written_config_pair_loads_and_names_the_target(tmp_path: Path) -> None:
    path = _csv(tmp_path, _table(), "My Table.csv")
    write_project(profile_table(path, "churned"), tmp_path / "proj", copy_data=True)
    settings = load_settings(tmp_path / "proj" / "config" / "config.yaml")
    assert settings.config.data.target_column == "churned"
    assert settings.model_name == "my-table-classifier"
    assert settings.config.data.features["plan"].type == "category"
    assert [f["name"] for f in settings.ludwig.to_ludwig_dict()["input_features"]] == [
        "monthly spend",
        "plan",
    ]
    text = (tmp_path / "proj" / "config" / "config.yaml").read_text()
    assert "# customer id: left out, an identifier" in text
    assert (tmp_path / "proj" / "data" / "raw" / "My Table.csv").is_file()
    with pytest.raises(InitError, match="exists; pass --force"):
        write_project(profile_table(path, "churned"), tmp_path / "proj")


def test_the_command_prints_the_next_step_and_fails_in_one_line(tmp_path: Path) -> None:
    path = _csv(tmp_path, _table())
    runner = CliRunner()
    ok = runner.invoke(
        main, ["init", "--data", str(path), "--target", "churned", "--output", str(tmp_path / "p")]
    )
    assert ok.exit_code == 0, ok.output
    assert "left out 'customer id'" in ok.output and "next: cp " in ok.output
    bad = runner.invoke(
        main, ["init", "--data", str(path), "--target", "plan2", "--output", str(tmp_path / "q")]
    )
    assert bad.exit_code == 1
    assert "no column 'plan2'" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize(
    ("rows", "batch", "epochs"), [(150, 16, 43), (569, 32, 24), (10_000, 256, 11), (10**6, 256, 5)]
)
def test_small_tables_get_enough_training_steps(rows: int, batch: int, epochs: int) -> None:
    from mlops_assets.project_init import trainer_for

    assert trainer_for(rows) == {"batch_size": batch, "epochs": epochs}
