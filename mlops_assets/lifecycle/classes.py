"""A model's classes, and the one rule that maps an incoming label onto them.

Labels arrive in many spellings: a label file, `POST /feedback`, a data file's target column.
`normalise_label` is the one rule all of them use: a value that is a class stays as it is; a
binary spelling (True, 1, 1.0, yes, t ... and their false twins, any case, spaces around)
becomes the class with the same meaning, whatever spelling the model's classes use. Anything
else is kept as stripped text, so a caller can report it as unknown.

Kept light (no pandas, no pandera): the model server imports it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mlops_assets.lifecycle.context import Lifecycle

TRUE_TOKENS = frozenset({"true", "t", "yes", "y", "1", "1.0"})
FALSE_TOKENS = frozenset({"false", "f", "no", "n", "0", "0.0"})


def canonical_label(value: Any) -> str:
    """A label as text; binary spellings (True, 1, 1.0, yes) collapse to `true`/`false`."""
    text = str(value).strip()
    low = text.lower()
    if low in TRUE_TOKENS:
        return "true"
    if low in FALSE_TOKENS:
        return "false"
    return text


def label_map(classes: Sequence[str]) -> dict[str, str]:
    """canonical spelling -> class label, for mapping incoming labels onto a model's classes."""
    return {canonical_label(c): str(c) for c in classes}


def normalise_label(value: Any, classes: Sequence[str] | None) -> str:
    """`value` as one of `classes` when it is one in another spelling, else its stripped text."""
    text = str(value).strip()
    if not classes or text in classes:
        return text
    return label_map(classes).get(canonical_label(text), text)


def normalise_labels(values: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """`normalise_label` over an array of raw target values (returned as is when all fit)."""
    if set(np.unique(values)) <= set(classes):
        return values
    mapping = label_map(classes)
    known = set(classes)
    return np.asarray(
        [t if t in known else mapping.get(canonical_label(t), t) for t in values.astype(str)]
    )


def version_classes(lc: Lifecycle, version: str) -> list[str] | None:
    """Class labels, in probability-column order, stored with a version (schema.json or bundle).

    None when the version has neither artifact.
    """
    from mlops_assets.lifecycle.tracking import missing_as_none, reaching

    client, uri = lc.client, lc.settings.tracking_uri
    with reaching(uri, f"reading v{version} of {lc.model_name}"):
        mv = client.get_model_version(lc.model_name, str(version))
    for artifact, key in (("schema.json", "classes"), ("serving/bundle.json", "classes")):
        with tempfile.TemporaryDirectory() as tmp:
            local = missing_as_none(  # None: not stored with this version; down: raised
                lambda a=artifact, d=tmp: client.download_artifacts(mv.run_id, a, d),
                uri,
                f"reading the classes of v{version}",
            )
            if local is None:
                continue
            try:
                classes = json.loads(Path(local).read_text(encoding="utf-8")).get(key) or []
            except (OSError, ValueError):
                continue
        if classes:
            return [str(c) for c in classes]
    return None
