"""The lifecycle context, the one label normaliser and the one `actor_from_run`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mlops_assets.actors import actor_from_run
from mlops_assets.lifecycle.classes import canonical_label, normalise_label, normalise_labels
from mlops_assets.lifecycle.states import Actor

BINARY = ["False", "True"]


# --- actor_from_run ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "actor"),
    [
        ({}, Actor.CLI),
        ({"mlops/actor": "ui"}, Actor.UI),
        ({"mlops/actor": "api"}, Actor.API),
        ({"dagster/sensor_name": "new_raw_file_sensor"}, Actor.SENSOR),
        ({"dagster/schedule_name": "lifecycle_schedule"}, Actor.SCHEDULE),
        # A schedule wins over a sensor, and both over the tag.
        ({"dagster/schedule_name": "s", "dagster/sensor_name": "x"}, Actor.SCHEDULE),
        ({"dagster/sensor_name": "x", "mlops/actor": "ui"}, Actor.SENSOR),
        ({"dagster/sensor_name": ""}, Actor.CLI),
    ],
)
def test_actor_from_run_precedence(tags: dict[str, str], actor: Actor) -> None:
    assert actor_from_run(tags) == actor


def test_actor_from_run_refuses_an_unknown_actor() -> None:
    with pytest.raises(ValueError):
        actor_from_run({"mlops/actor": "robot"})


# --- the one label normaliser --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # What the server's feedback normaliser mapped (0/1, yes/no, True/False, any case).
        (1, "True"),
        ("0", "False"),
        (True, "True"),
        ("yes", "True"),
        ("True", "True"),
        (" no ", "False"),
        ("T", "True"),
        ("f", "False"),
        # What training's holdout normaliser mapped (1.0 from a float column, Y, TRUE).
        (1.0, "True"),
        ("0.0", "False"),
        ("Y", "True"),
        ("TRUE", "True"),
        # Not a spelling of either class: kept (stripped) so it can be reported as unknown.
        ("maybe", "maybe"),
        (" x ", "x"),
    ],
)
def test_normalise_label_onto_binary_classes(value: object, expected: str) -> None:
    assert normalise_label(value, BINARY) == expected


def test_normalise_label_keeps_classes_and_text_without_classes() -> None:
    assert normalise_label("churn", ["churn", "stay"]) == "churn"
    assert normalise_label(" stay", ["churn", "stay"]) == "stay"
    assert normalise_label(" x ", None) == "x"
    assert normalise_label("yes", []) == "yes"


def test_normalise_label_maps_onto_any_binary_spelling_of_the_classes() -> None:
    # The label-file rule: a model whose classes are 0/1 or no/yes gets True/yes/1 mapped too.
    assert normalise_label("True", ["0", "1"]) == "1"
    assert normalise_label("no", ["0", "1"]) == "0"
    assert normalise_label("1", ["no", "yes"]) == "yes"
    assert normalise_label("FALSE", ["no", "yes"]) == "no"


def test_canonical_label_is_what_validation_and_label_files_compare() -> None:
    # validation.py and the label files compare canonical forms of labels and classes.
    assert {canonical_label(v) for v in ("1", "1.0", "yes", "Y", "t", True)} == {"true"}
    assert {canonical_label(v) for v in ("0", "0.0", "No", "n", "F", False)} == {"false"}
    assert canonical_label(" Churn ") == "Churn"


def test_normalise_labels_on_an_array() -> None:
    values = np.array(["1", "0", "yes", "No", "True"])
    assert normalise_labels(values, BINARY).tolist() == ["True", "False", "True", "False", "True"]
    same = np.array(["True", "False"])
    assert normalise_labels(same, BINARY) is same  # already classes: returned as is
    assert normalise_labels(np.array(["a", "b"]), ["a", "b"]).tolist() == ["a", "b"]


def test_the_server_uses_the_one_normaliser() -> None:
    import serving.edge
    from mlops_assets.lifecycle import classes

    assert serving.edge.normalise_label is classes.normalise_label


# --- one context per process ---------------------------------------------------------------


def test_the_dagster_resource_and_the_cli_share_one_context(
    make_project: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy

    from mlops_assets.cli import Ctx
    from mlops_assets.lifecycle import context
    from resources import LifecycleResource

    root = make_project()
    config = root / "config" / "config.yaml"
    monkeypatch.setattr(context, "_shared", {})
    made: list[object] = []
    create_engine = sqlalchemy.create_engine

    def counting(url, *args, **kwargs):
        engine = create_engine(url, *args, **kwargs)
        if engine.url.database and engine.url.database.endswith("lifecycle.db"):
            made.append(engine.url)
        return engine

    monkeypatch.setattr(sqlalchemy, "create_engine", counting)
    cli = Ctx(str(config)).lifecycle
    dagster = LifecycleResource(config_path=str(config)).context()
    assert dagster is cli
    assert dagster.store is LifecycleResource(config_path=str(config)).store()
    assert cli.on_applied is not None  # the CLI and Dagster ask a running server to reload
    assert len(made) == 1
    assert cli.registry is cli.registry
    cli.close()
