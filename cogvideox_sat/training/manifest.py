"""Checkpoint manifests: size and SHA-256 of every file of a tag folder, and flushing to disk.

A save is *sealed* once `<tag>/manifest.json` lists every file the save wrote; it is written after
those files are complete and fsynced, and before `latest` moves. A tag folder with no manifest is
a save that never finished; one whose files differ from their manifest was damaged afterwards
(storage fault, interrupted copy). Hashing and checking are split over the ranks (each reads
every world-th file), so a ZeRO checkpoint of many partitions costs each rank one share.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from cogvideox_sat import distributed

MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK = 8 << 20


# ---------------------------------------------------------------- durability


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to the device (a read-only descriptor suffices on Linux)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries, so the names created or renamed in it survive a power loss."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, text: str) -> None:
    """Replace `path` by `text` atomically (temp file, fsync, rename, fsync of the folder)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


# ---------------------------------------------------------------- hashing


def tag_files(tag_dir: Path) -> list[str]:
    """Relative paths of the files of a tag folder (the manifest and hidden temp files excluded)."""
    names = []
    for path in sorted(tag_dir.rglob("*")):
        rel = path.relative_to(tag_dir).as_posix()
        if path.is_file() and rel != MANIFEST and not path.name.startswith("."):
            names.append(rel)
    return names


def _digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _my_share(names: list[str]) -> list[str]:
    return names[distributed.world_rank():: distributed.world_size()]


def seal(tag_dir: Path, durable: bool = True) -> int:
    """Write `tag_dir/manifest.json` (every rank calls this); returns the checkpoint's bytes.

    Each rank hashes (and, when `durable`, fsyncs) its share of the files; rank 0 writes the
    manifest and fsyncs the folder.
    """
    names = distributed.broadcast_object(tag_files(tag_dir) if distributed.world_rank() == 0 else None)
    entries = {}
    for name in _my_share(names):
        if durable:
            fsync_file(tag_dir / name)
        size, sha = _digest(tag_dir / name)
        entries[name] = {"bytes": size, "sha256": sha}
    merged: dict[str, Any] = {}
    for part in distributed.gather_objects(entries):
        merged.update(part)
    if distributed.world_rank() == 0:
        body = json.dumps({"format": FORMAT, "tag": tag_dir.name, "files": dict(sorted(merged.items()))}, indent=1)
        if durable:
            write_durably(tag_dir / MANIFEST, body)
        else:
            (tag_dir / MANIFEST).write_text(body)
    return sum(e["bytes"] for e in merged.values())


# ---------------------------------------------------------------- checking


@dataclass(frozen=True)
class TagCheck:
    """Outcome of checking one tag folder against its manifest."""

    tag: str
    problems: tuple[str, ...]
    bytes: int = 0
    files: int = 0

    @property
    def intact(self) -> bool:
        return not self.problems

    def reason(self) -> str:
        return "; ".join(self.problems)


def read_manifest(tag_dir: Path) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """(manifest, None) or (None, why it cannot be used)."""
    path = tag_dir / MANIFEST
    if not path.is_file():
        return None, f"{MANIFEST} is missing (the save did not finish)"
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or not all({"bytes", "sha256"} <= set(e) for e in files.values()):
            raise ValueError("entries lack bytes/sha256")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"{MANIFEST} is unreadable ({err})"
    return manifest, None


def _check_files(tag_dir: Path, expected: dict[str, Any], names: list[str]) -> list[str]:
    problems = []
    for name in names:
        path, want = tag_dir / name, expected[name]
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        size = path.stat().st_size
        if size != want["bytes"]:
            problems.append(f"{name} has {size} bytes, the manifest says {want['bytes']} (cut short or overwritten)")
        elif _digest(path)[1] != want["sha256"]:
            problems.append(f"{name}: SHA-256 differs from the manifest (contents damaged)")
    return problems


def check_tag(tag_dir: Path) -> TagCheck:
    """Check a tag folder against its manifest (a collective when a process group exists: each
    rank hashes its share of the files; every rank gets the same verdict)."""
    manifest, why = read_manifest(tag_dir)
    if manifest is None:
        problems = [why]
        total, expected = 0, {}
    else:
        expected = manifest["files"]
        total = sum(int(e["bytes"]) for e in expected.values())
        problems = []
        for part in distributed.gather_objects(_check_files(tag_dir, expected, _my_share(sorted(expected)))):
            problems.extend(part)
        extra = sorted(set(tag_files(tag_dir)) - set(expected))
        problems.extend(f"{name} is not in the manifest (left by another save)" for name in extra)
    return TagCheck(tag_dir.name, tuple(problems), total, len(expected))


def manifest_bytes(tag_dir: Path) -> Optional[int]:
    """Total size a sealed tag's manifest records (None without a usable manifest)."""
    manifest, _ = read_manifest(tag_dir)
    return None if manifest is None else sum(int(e["bytes"]) for e in manifest["files"].values())
