"""`mlops init`: profile a CSV and write a commented config pair for it.

The config pair is `config/config.yaml` (the project's defaults, with `data.target_column` and
one validation rule per kept column) and `config/ludwig_config.yaml` (input features by
inferred type, the output feature, the shipped combiner and trainer). Columns that cannot
help a model are left out, each with the reason as a comment: empty, constant, or an
identifier (a distinct text value in every row). The target must be a classification target:
present, never entirely empty, with 2 to `MAX_CLASSES` classes.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mlops_assets.lifecycle.schema import FeatureSpec, infer_feature

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config"
MAX_CLASSES = 20
MIN_STEPS = 300  # optimiser steps a small table's training should get at least
PROFILE_ROWS = 200_000  # enough to profile; a bigger file is profiled on its first rows


class InitError(ValueError):
    """The table cannot become a project; the message says why."""


@dataclass
class Profile:
    """What `init` learned from the table."""

    path: Path
    rows: int
    target: str
    target_type: str
    classes: list[str]
    features: list[FeatureSpec]
    dropped: dict[str, str] = field(default_factory=dict)


def profile_table(path: Path, target: str, *, max_category_cardinality: int = 50) -> Profile:
    """Read up to PROFILE_ROWS rows of `path` and infer the features and the target."""
    if not path.is_file():
        raise InitError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, nrows=PROFILE_ROWS)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise InitError(f"{path}: not a readable CSV ({exc})") from exc
    if target not in frame.columns:
        columns = ", ".join(repr(c) for c in frame.columns[:30])
        raise InitError(f"{path}: no column {target!r} to predict; the columns are {columns}")
    labels = frame[target].dropna()
    if labels.empty:
        raise InitError(f"{path}: the target {target!r} is empty in every row")
    classes = sorted(str(v) for v in labels.unique())
    if len(classes) < 2:
        raise InitError(f"{path}: the target {target!r} has one value only ({classes[0]!r})")
    if len(classes) > MAX_CLASSES:
        kind = "numbers" if pd.api.types.is_numeric_dtype(labels) else "values"
        raise InitError(
            f"{path}: the target {target!r} has {len(classes)} distinct {kind}; this project "
            f"judges classifiers (2 to {MAX_CLASSES} classes), not regression"
        )
    if frame[target].isna().any():
        missing = int(frame[target].isna().sum())
        raise InitError(
            f"{path}: the target {target!r} is missing in {missing} rows; drop them or label "
            "them first (validation refuses unlabelled rows)"
        )
    features, dropped = [], {}
    for name in frame.columns:
        if name == target:
            continue
        column = frame[name]
        distinct = column.nunique(dropna=True)
        if distinct == 0:
            dropped[str(name)] = "empty in every row"
        elif distinct == 1:
            dropped[str(name)] = f"constant ({column.dropna().iloc[0]!r})"
        elif (
            not pd.api.types.is_numeric_dtype(column)
            and distinct == len(column)
            and len(column) > max_category_cardinality
        ):
            dropped[str(name)] = "an identifier (a distinct text value in every row)"
        else:
            features.append(infer_feature(column, max_category_cardinality))
    if not features:
        raise InitError(f"{path}: no column is usable as an input ({dropped})")
    return Profile(
        path=path,
        rows=len(frame),
        target=target,
        target_type="binary" if infer_feature(frame[target]).type == "binary" else "category",
        classes=classes,
        features=features,
        dropped=dropped,
    )


def _rule(spec: FeatureSpec) -> dict[str, Any]:
    rule: dict[str, Any] = {"type": spec.type}
    if not spec.nullable:
        rule["nullable"] = False
    return rule


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("...").strip()  # a bare scalar ends its document with "..."


def render_config(profile: Profile) -> str:
    """`config/config.yaml`: the shipped defaults with this table's target and column rules."""
    base = yaml.safe_load((REPO_CONFIG / "config.yaml").read_text())
    base["data"]["target_column"] = profile.target
    base["data"]["features"] = {}
    base["mlflow"]["registered_model_name"] = _model_name(profile)
    body = yaml.safe_dump(base, sort_keys=False, width=100)
    lines = [
        f"# Written by `mlops init --data {profile.path.name} --target {profile.target}` from "
        f"{profile.rows} rows.",
        "# Every key is validated at load time (mlops_assets/settings.py); see the README's",
        '# "Configuration" section. Relative paths resolve against the project directory.',
        "",
    ]
    rules = []
    for spec in profile.features:
        seen = (
            f"seen {spec.min:g} to {spec.max:g}"
            if spec.type == "number" and spec.min is not None and spec.max is not None
            else f"{len(spec.categories or [])} values seen"
            if spec.type == "category"
            else "two values"
        )
        # Observed ranges are comments, not rules: new data may rightly go beyond them.
        rules.append(f"    {_flow(spec.name)}: {_flow(_rule(spec))}  # {seen}")
    for name, why in profile.dropped.items():
        rules.append(f"    # {name}: left out, {why}")
    for line in body.splitlines():
        if line.strip() == "features: {}":
            lines.append(
                "  # One rule per input column: its type, and nullable: false where no row"
            )
            lines.append("  # was missing it. Add min/max or categories to tighten validation.")
            lines.append("  features:")
            lines.extend(rules)
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def render_ludwig(profile: Profile) -> str:
    """`config/ludwig_config.yaml`: the inferred inputs, the target, the shipped trainer."""
    base = yaml.safe_load((REPO_CONFIG / "ludwig_config.yaml").read_text())
    base["input_features"] = [{"name": f.name, "type": f.type} for f in profile.features]
    base["output_features"] = [{"name": profile.target, "type": profile.target_type}]
    base["trainer"].update(trainer_for(profile.rows))
    classes = ", ".join(profile.classes[:10])
    head = [
        f"# Ludwig ECD model for {profile.path.name}, written by `mlops init`.",
        f"# Target {profile.target!r} ({profile.target_type}, classes: {classes}).",
        "# Input types were inferred (number, binary or category by dtype and cardinality);",
        "# change one here and in config.yaml's data.features together. The trainer's batch",
        f"# size and epochs are sized for {profile.rows} rows (about {MIN_STEPS} steps at least).",
    ]
    return "\n".join(head) + "\n" + yaml.safe_dump(base, sort_keys=False, width=100)


def trainer_for(rows: int, *, train_fraction: float = 0.7) -> dict[str, int]:
    """A batch size and epoch count that give a small table enough optimiser steps.

    The shipped trainer (batch 256, 5 epochs) takes one step per epoch on a few hundred rows,
    and the model stays near chance. Aim for about MIN_STEPS steps, batches of a tenth of the
    training rows (a power of two, 16 to 256), and 5 to 100 epochs.
    """
    train_rows = max(1, int(rows * train_fraction))
    batch = 16
    while batch * 2 <= min(256, train_rows // 10):
        batch *= 2
    steps_per_epoch = max(1, math.ceil(train_rows / batch))
    epochs = min(100, max(5, math.ceil(MIN_STEPS / steps_per_epoch)))
    return {"batch_size": batch, "epochs": epochs}


def _model_name(profile: Profile) -> str:
    stem = "".join(c if c.isalnum() else "-" for c in profile.path.stem.lower()).strip("-")
    return f"{stem or 'model'}-classifier"


def write_project(
    profile: Profile, output: Path, *, force: bool = False, copy_data: bool = False
) -> list[Path]:
    """Write the config pair and the data folders under `output`; return the files written."""
    config_dir = output / "config"
    targets = [config_dir / "config.yaml", config_dir / "ludwig_config.yaml"]
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise InitError(f"{existing[0]} exists; pass --force to overwrite it")
    config_dir.mkdir(parents=True, exist_ok=True)
    targets[0].write_text(render_config(profile))
    targets[1].write_text(render_ludwig(profile))
    for sub in ("data/raw", "data/quarantine", "data/labels"):
        (output / sub).mkdir(parents=True, exist_ok=True)
    written = list(targets)
    if copy_data:
        dest = output / "data" / "raw" / profile.path.name
        shutil.copyfile(profile.path, dest)
        written.append(dest)
    return written
