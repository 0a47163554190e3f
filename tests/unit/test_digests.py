"""Bundle digests: a changed, missing or added file is named; the registered digest anchors all."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_assets.lifecycle.digests import (
    DIGESTS_FILE,
    BundleMismatch,
    verify_bundle,
    write_digests,
)


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "bundle"
    (root / "model").mkdir(parents=True)
    (root / "bundle.json").write_text('{"target": "churn"}')
    (root / "inference.pt").write_bytes(bytes(range(256)) * 10_000)  # 2.5 MB: several chunks
    (root / "model" / "weights.bin").write_bytes(b"w" * 100)
    return root, write_digests(root)


def test_an_untouched_bundle_verifies_with_and_without_the_registered_digest(
    bundle: tuple[Path, str],
) -> None:
    root, digest = bundle
    assert len(digest) == 64
    assert verify_bundle(root, digest) == digest
    assert verify_bundle(root, None) == digest
    assert write_digests(root) == digest  # deterministic: re-export gives the same digest


@pytest.mark.parametrize(
    ("change", "file"),
    [
        (lambda r: (r / "inference.pt").write_bytes(b"x"), "inference.pt"),
        (
            lambda r: (r / "model" / "weights.bin").write_bytes(b"w" * 99 + b"v"),
            "model/weights.bin",
        ),
        (lambda r: (r / "model" / "weights.bin").unlink(), "model/weights.bin"),
        (lambda r: (r / "model" / "extra.py").write_text("import os"), "model/extra.py"),
    ],
    ids=["changed", "one byte", "missing", "added"],
)
def test_a_changed_bundle_is_refused_naming_the_file(
    bundle: tuple[Path, str], change: object, file: str
) -> None:
    root, digest = bundle
    change(root)  # type: ignore[operator]
    with pytest.raises(BundleMismatch) as info:
        verify_bundle(root, digest)
    assert info.value.file == file and file in str(info.value)


def test_a_rewritten_listing_is_caught_by_the_registered_digest(bundle: tuple[Path, str]) -> None:
    root, digest = bundle
    (root / "inference.pt").write_bytes(b"tampered")
    forged = write_digests(root)  # the artifact store is consistent with itself again
    assert verify_bundle(root, None) == forged  # without the registry, nothing to compare to
    with pytest.raises(BundleMismatch) as info:
        verify_bundle(root, digest)
    assert info.value.file == DIGESTS_FILE and "registered" in str(info.value)


def test_a_bundle_without_digests_is_unverified_unless_one_is_registered(tmp_path: Path) -> None:
    (tmp_path / "bundle.json").write_text("{}")
    assert verify_bundle(tmp_path, None) is None
    with pytest.raises(BundleMismatch, match="missing"):
        verify_bundle(tmp_path, "0" * 64)


def test_an_unreadable_listing_is_a_mismatch(bundle: tuple[Path, str]) -> None:
    root, _ = bundle
    (root / DIGESTS_FILE).write_text("{not json")
    with pytest.raises(BundleMismatch, match="cannot be read"):
        verify_bundle(root, None)
