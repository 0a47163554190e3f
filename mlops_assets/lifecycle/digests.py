"""What is served is what was registered: sha256 digests of every file of a serving bundle.

At export, `write_digests` records the sha256 of every file of the bundle in `sha256.json`,
and the sha256 of that file is the bundle's digest, kept as the model-version tag
`bundle.sha256` (the registry, not the artifact store, holds the reference). Before a replica
loads a version, `verify_bundle` recomputes every digest; a file that differs, is missing or
was added is refused with its name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

DIGESTS_FILE = "sha256.json"
CHUNK_BYTES = 1 << 20


class BundleMismatch(Exception):
    """The bundle on disk is not the bundle that was registered."""

    def __init__(self, message: str, file: str | None = None) -> None:
        super().__init__(message)
        self.file = file


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of one file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _files(bundle_dir: Path) -> dict[str, Path]:
    return {
        p.relative_to(bundle_dir).as_posix(): p
        for p in sorted(bundle_dir.rglob("*"))
        if p.is_file() and p.name != DIGESTS_FILE
    }


def write_digests(bundle_dir: Path) -> str:
    """Write `sha256.json` for every file of `bundle_dir`; return the bundle's digest."""
    bundle_dir = Path(bundle_dir)
    digests = {name: file_sha256(path) for name, path in _files(bundle_dir).items()}
    body = json.dumps({"files": digests}, indent=1, sort_keys=True).encode()
    (bundle_dir / DIGESTS_FILE).write_bytes(body)
    return hashlib.sha256(body).hexdigest()


def verify_bundle(bundle_dir: Path, expected: str | None) -> str | None:
    """Check every file of `bundle_dir` against its `sha256.json` and that against `expected`.

    Returns the bundle's digest, or None for a bundle exported before digests existed (no
    `sha256.json`, and nothing expected). Raises BundleMismatch naming the first file that
    differs.
    """
    bundle_dir = Path(bundle_dir)
    listing = bundle_dir / DIGESTS_FILE
    if not listing.is_file():
        if expected:
            raise BundleMismatch(
                f"{DIGESTS_FILE} is missing, but the registry records bundle.sha256 {expected}",
                DIGESTS_FILE,
            )
        return None
    body = listing.read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    if expected and digest != expected:
        raise BundleMismatch(
            f"{DIGESTS_FILE} differs from the registered one "
            f"(sha256 {digest[:12]}…, registered {expected[:12]}…)",
            DIGESTS_FILE,
        )
    try:
        wanted: dict[str, str] = json.loads(body)["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleMismatch(f"{DIGESTS_FILE} cannot be read: {exc}", DIGESTS_FILE) from None
    present = _files(bundle_dir)
    for name in sorted(set(wanted) - set(present)):
        raise BundleMismatch(f"{name} is missing from the bundle", name)
    for name in sorted(set(present) - set(wanted)):
        raise BundleMismatch(f"{name} is in the bundle but was not registered", name)
    for name, path in present.items():
        got = file_sha256(path)
        if got != wanted[name]:
            raise BundleMismatch(
                f"{name} differs from the registered file "
                f"(sha256 {got[:12]}…, registered {wanted[name][:12]}…)",
                name,
            )
    return digest
