"""Bring your own data: two tables this project did not generate go from `mlops init` to a
registered champion (issue 14 §5). scikit-learn ships them: breast cancer (30 numeric columns
with spaces in their names, binary 0/1 target) and wine (3 classes, a slash in a name)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mlops_assets.cli import main
from tests.conftest import isolate_env


def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame, "target"


def _wine():
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "class a", 1: "class b", 2: "class c"})
    return frame.rename(columns={"target": "cultivar"}), "cultivar"


@pytest.mark.parametrize("table", [_breast_cancer, _wine], ids=["breast-cancer", "wine"])
def test_init_then_one_cycle_registers_a_champion(
    table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    from mlflow import MlflowClient

    from mlops_assets.pipeline import run_cycle_for_file
    from mlops_assets.settings import load_settings

    frame, target = table()
    source = tmp_path / f"{table.__name__.strip('_')} table.csv"
    frame.to_csv(source, index=False)
    project = tmp_path / "project"
    result = CliRunner().invoke(
        main,
        [
            "init",
            "--data",
            str(source),
            "--target",
            target,
            "--output",
            str(project),
            "--copy-data",
        ],
    )
    assert result.exit_code == 0, result.output
    isolate_env(monkeypatch, project)
    (project / ".mlops" / "dagster").mkdir(parents=True)
    settings = load_settings(project / "config" / "config.yaml")
    settings.ensure_dirs()
    report = run_cycle_for_file(settings, project / "data" / "raw" / source.name, evaluate=True)
    assert report["success"], report.get("errors")
    client = MlflowClient(settings.tracking_uri)
    champion = client.get_model_version_by_alias(settings.model_name, "champion")
    assert str(champion.version) == "1"
    assert not list((project / "data" / "quarantine").iterdir())
