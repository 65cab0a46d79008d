"""WebDataset shards: list them, split them over ranks and workers, read their samples.

A shard is a tar file whose members are named `<key>.<ext>`; the members sharing a key form
one sample (`0001.mp4`, `0001.txt`, `0001.json`). Per-sample metadata can also come from a
`<shard name>.meta.jsonl` file beside the shard (one JSON object per line with a `key` field),
the official format.

Splitting: every (data-parallel rank, loader worker) pair is a slot. With at least as many
shards as slots, slot s reads shards s, s + S, s + 2S, ... of the epoch's shard order; with
fewer, several slots read the same shard and each keeps every k-th sample of it. Either way
each sample is read by exactly one slot per epoch.

Members larger than the size limit are not read into memory at all (the tar stream skips
them), and a broken shard ends with a warning instead of an exception.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cogvideox_sat.data.skips import BadSample


@dataclass
class RawSample:
    """The members of one sample, as bytes, plus where it came from."""

    key: str
    shard: str
    members: dict[str, bytes] = field(default_factory=dict)
    oversized: dict[str, int] = field(default_factory=dict)  # ext -> size of members not read
    meta: dict = field(default_factory=dict)  # from the .meta.jsonl sidecar

    @property
    def name(self) -> str:
        return f"{self.shard}:{self.key}"


def expand_shards(path: str, include_dirs: str | None = None) -> list[str]:
    """Shard paths from the official `path` / `include_dirs` syntax.

    `path`: a shard, a brace pattern (`data/{000..099}.tar`), a folder (every .tar below it), or
    several of these separated by commas; a leading ';' means "no path, include_dirs follow"
    (official). `include_dirs`: comma-separated folders, each optionally `*n` to repeat its
    shards n times (weighting).
    """
    from braceexpand import braceexpand

    if path.startswith(";"):
        path, include_dirs = "", path[1:]
    shards: list[str] = []
    for part in filter(None, (p.strip() for p in path.split(","))):
        for p in braceexpand(part):
            shards += _tars_under(p) if os.path.isdir(p) else [p]
    for part in filter(None, (p.strip() for p in (include_dirs or "").split(","))):
        folder, _, times = part.partition("*")
        shards += _tars_under(folder) * (int(times) if times else 1)
    return shards


def _tars_under(folder: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".tar")]
    return [f for f in found if os.path.getsize(f) > 0]


def assign_shards(num_shards: int, slot: int, num_slots: int) -> list[tuple[int, int, int]]:
    """The (shard position, keep_every, keep_offset) triples slot `slot` reads."""
    if num_shards >= num_slots:
        return [(i, 1, 0) for i in range(slot, num_shards, num_slots)]
    shard = slot % num_shards
    sharing = len(range(shard, num_slots, num_shards))  # slots reading this shard
    return [(shard, sharing, slot // num_shards)]


def read_sidecar_meta(shard: str, meta_names: list[str] | None) -> dict[str, dict]:
    """{key: meta} from `<shard name up to its first dot>.meta.jsonl`, if that file exists."""
    folder, name = os.path.split(shard)
    sidecar = os.path.join(folder, name.split(".")[0] + ".meta.jsonl")
    meta: dict[str, dict] = {}
    if not os.path.isfile(sidecar):
        return meta
    with open(sidecar, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a broken line loses its sample's metadata only
            if isinstance(record, dict) and "key" in record:
                wanted = record if not meta_names else {k: record[k] for k in meta_names if k in record}
                meta.setdefault(str(record["key"]), {}).update(wanted)
    return meta


def iter_shard(shard: str, max_member_bytes: int, meta_names: list[str] | None = None) -> Iterator[RawSample]:
    """The samples of one tar shard, in order. Raises BadSample('corrupt'|'missing') when the
    shard itself breaks; samples read before the break have been yielded."""
    if not os.path.isfile(shard):
        raise BadSample("missing", shard, "shard not found")
    sidecar = read_sidecar_meta(shard, meta_names)
    current: RawSample | None = None
    try:
        with tarfile.open(shard, mode="r|*") as stream:
            for info in stream:
                if not info.isfile():
                    continue
                key, ext = _split_name(info.name)
                if key is None:
                    continue
                if current is not None and key != current.key:
                    yield current
                    current = None
                if current is None:
                    current = RawSample(key=key, shard=shard, meta=sidecar.get(Path(key).name, sidecar.get(key, {})))
                if info.size > max_member_bytes:
                    current.oversized[ext] = info.size  # never read: the stream skips its data
                    continue
                member = stream.extractfile(info)
                current.members[ext] = member.read() if member is not None else b""
    except (tarfile.TarError, OSError, EOFError) as err:
        # the sample being read when the shard broke is incomplete: dropped with the shard
        raise BadSample("corrupt", shard, f"broken tar: {err}") from None
    if current is not None:
        yield current


def _split_name(name: str) -> tuple[str | None, str]:
    """`dir/0001.mp4` -> ('dir/0001', 'mp4'); metadata such as `__x__` or dot-files -> None."""
    folder, base = os.path.split(name)
    if base.startswith(".") or base.startswith("__") or "." not in base:
        return None, ""
    stem, ext = base.split(".", 1)
    return os.path.join(folder, stem) if folder else stem, ext.lower()
