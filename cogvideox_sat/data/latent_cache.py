"""Latent cache: VAE latents and T5 embeddings computed once, before training.

Layout of a cache folder:
    manifest.json                  format, encoder fingerprint, latent kind
    hashes.json                    content digests of the source files (see hashing.HashMemo);
                                   hashes.rank<N>.json from process N of a build over several
    entries/<ab>/<key>.safetensors one file per sample: tensors + string metadata
    indexes/<key>.json             WebDataset caches: the sample keys of one shard, in shard order
                                   (see shard_cache.py), so training never opens the tar files

Entry tensors (format 2):
    latent       unscaled VAE latent (C', T', H', W'), or the posterior moments (2C', ...)
    txt_emb      (L, D) T5 embedding of the caption
    first_frame  uint8 (C, 1, H, W): the clip's frame 0 after the training preprocessing, the
                 frame image-to-video models noise and encode at every step (absent when built
                 with first_frame=False)
    image        uint8 (1, C, H, W): the separate image of images.txt, only when there is one
Format 1 caches still load: their `first_frame` was the `image` item (images.txt image, else
frame 0), so they serve latents, text and `image`, but count as caches without first frames.

An entry's key hashes the sample key (file content digest, caption, preprocessing params;
made by the dataset) together with the encoder fingerprint (model weights), so changing any
of them makes a different key: stale entries are never read, they are just not found.
`prune` deletes entries the current dataset no longer asks for.

Entries are written to a temporary file and renamed into place, so an interrupted build never
leaves a half-written entry, and a rerun resumes by skipping the entries that exist.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from cogvideox_sat.data.hashing import HashMemo, digest_of

FORMAT = 2  # the format new builds write
READABLE_FORMATS = (1, 2)
MANIFEST = "manifest.json"
HASHES = "hashes.json"


def memo_name(rank: int) -> str:
    """The digest memo a build process writes (every process reads all of them)."""
    return HASHES if rank == 0 else f"hashes.rank{rank}.json"


def process_memo(root: str | os.PathLike, rank: int = 0) -> HashMemo:
    """The digest memo of cache folder `root` for build process `rank`: it reads every process's
    memo and saves to its own, so processes of one build never overwrite each other's."""
    root = Path(root)
    others = [p for p in sorted(root.glob("hashes*.json")) if p.name != memo_name(rank)]
    return HashMemo(root / memo_name(rank), also=others)


class StaleCacheError(RuntimeError):
    """The cache was built with other model weights than the ones training uses."""


class LatentCache:
    """Read and write the entries of one cache folder."""

    def __init__(self, root: str | os.PathLike, rank: int = 0) -> None:
        """`rank`: the process of a build split over several (it saves digests to its own memo)."""
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(
                f"'{self.root}' is not a latent cache (no {MANIFEST}); build one with "
                f"`python tools/build_latent_cache.py --base <model.yaml> <sft.yaml> --cache-dir {self.root}`"
            )
        info = json.loads(manifest.read_text())
        if info.get("format") not in READABLE_FORMATS:
            raise StaleCacheError(
                f"latent cache '{self.root}' has format {info.get('format')}, this version reads {READABLE_FORMATS}; "
                f"rebuild it with `python tools/build_latent_cache.py --base <model.yaml> <sft.yaml> --cache-dir {self.root}`"
            )
        self.format: int = info["format"]
        self.fingerprint: str = info["fingerprint"]
        self.latent_kind: str = info.get("latent_kind", "sample")
        self.description: dict = info.get("description", {})
        self.hashes = process_memo(self.root, rank)

    @classmethod
    def create(
        cls, root: str | os.PathLike, fingerprint: str, latent_kind: str = "sample", description: dict | None = None, rank: int = 0
    ) -> LatentCache:
        """Open `root` for building with this fingerprint (a new one supersedes the old entries);
        `rank`: this process's number in a build split over several."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        info = {"format": FORMAT, "fingerprint": fingerprint, "latent_kind": latent_kind, "description": description or {}}
        manifest = root / MANIFEST
        if not manifest.is_file() or json.loads(manifest.read_text()) != info:
            _atomic_write_text(manifest, json.dumps(info, indent=2, sort_keys=True))
        return cls(root, rank)

    def check_fingerprint(self, expected: str) -> None:
        """Raise StaleCacheError unless the cache was built for the weights fingerprinted `expected`."""
        if expected != self.fingerprint:
            raise StaleCacheError(
                f"latent cache '{self.root}' was built for model weights {self.fingerprint[:12]}…, "
                f"the model now has {expected[:12]}…; rebuild it with tools/build_latent_cache.py "
                "(or train without the cache)"
            )

    @property
    def has_first_frames(self) -> bool:
        """Whether entries may carry the clip's frame 0 (`first_frame`); format 1's meant `image`."""
        return self.format >= 2

    def entry_key(self, sample_key: str) -> str:
        # the cache's own format: a format-1 cache keeps finding its entries
        return digest_of({"sample": sample_key, "encoder": self.fingerprint, "format": self.format})

    def entry_path(self, sample_key: str) -> Path:
        key = self.entry_key(sample_key)
        return self.root / "entries" / key[:2] / f"{key}.safetensors"

    def contains(self, sample_key: str, tensors: Iterable[str] = ()) -> bool:
        """Whether the entry exists and holds all of `tensors` (reads only the file header)."""
        path = self.entry_path(sample_key)
        if not path.is_file():
            return False
        wanted = set(tensors)
        if not wanted:
            return True
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return wanted <= set(f.keys())
        except (SafetensorError, OSError):
            return False

    def load(self, sample_key: str) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
        """(tensors, metadata) of an entry, or None when absent or unreadable."""
        from safetensors import SafetensorError, safe_open

        path = self.entry_path(sample_key)
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except (FileNotFoundError, SafetensorError, OSError):
            return None

    def save(self, sample_key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
        """Write an entry atomically."""
        from safetensors.torch import save_file

        path = self.entry_path(sample_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
        return path

    def index_path(self, index_key: str) -> Path:
        return self.root / "indexes" / f"{digest_of({'index': index_key, 'encoder': self.fingerprint})}.json"

    def has_index(self, index_key: str) -> bool:
        return self.index_path(index_key).is_file()

    def load_index(self, index_key: str) -> dict | None:
        """A shard index written by `save_index`, or None when absent or unreadable."""
        try:
            return json.loads(self.index_path(index_key).read_text())
        except (OSError, ValueError):
            return None

    def save_index(self, index_key: str, index: dict) -> Path:
        """Write a shard index atomically."""
        path = self.index_path(index_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(path, json.dumps(index))
        return path

    def prune(self, keep: Iterable[str], keep_indexes: Iterable[str] = ()) -> int:
        """Delete every entry (and leftover temporary file) not among the sample keys `keep`, and
        every shard index not among the index keys `keep_indexes`."""
        wanted = {self.entry_key(k) for k in keep}
        wanted_indexes = {self.index_path(k).name for k in keep_indexes}
        removed = 0
        for path in [*(self.root / "entries").glob("*/*"), *(self.root / "indexes").glob("*")]:
            name = path.name
            if name.startswith(".") or (name.removesuffix(".safetensors") not in wanted and name not in wanted_indexes):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
