"""VideoDataset: captioned clips streamed from WebDataset tar shards (target `data_video.VideoDataset`).

Each sample of a shard holds a video (`mp4`, or `avi`/`mov`/`mkv`/`webm`) or a still image
(`jpg`/`jpeg`/`png`/`webp`/`bmp`, trained as a one-frame clip: see still.py), its caption
(member `<txt_key>`, default `caption`; or `txt`; or that field of the json) and metadata with
`duration` and `fps` (a `json` member, or the official `.meta.jsonl` sidecar). Items are the
official ones: `mp4` float (num_frames, C, H, W) in [-1, 1], `txt`, `num_frames`, `fps`.

As official: a random start per clip, frames at exactly the target fps, center crop; clips
shorter than `num_frames / fps` (+ the skipped frames) are skipped before decoding; the
stream never ends unless `nshards` says so (official `ResampledShards` semantics: each
loader worker stops after reading `nshards` shards).
Different, on purpose: shards are split over data-parallel ranks and loader workers (each
sample read once per epoch, see shards.py) instead of drawn at random with replacement;
clips without duration/fps metadata are probed instead of dropped; bad samples and broken
shards are skipped with a warning and counted (`skip_counts()`), not printed; `txt_key`
is honoured (the official class ignored it); Python 3.12 safe (the official
`random.randint(3.0, ...)` raises there). Local shard files only (no pipe:/s3 URLs).

With `latent_cache` (built by tools/build_latent_cache.py, see shard_cache.py) items carry VAE
latents and T5 embeddings as SFTDataset's cached items do, and no tar file is opened: each
shard's sample list comes from its index in the cache. The stream is the same (shards split
over ranks and workers, epochs in a new order, the shuffle buffer); a cached clip has the
windows the build chose (`--windows`, each start drawn once), and each visit picks one of them
at random instead of a fresh start. Shards missing from the cache are skipped ("not_cached").
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

from torch.utils.data import IterableDataset, get_worker_info

from cogvideox_sat.data import sampling
from cogvideox_sat.data.buckets import choose_bucket, parse_buckets
from cogvideox_sat.data.cached_items import cached_item
from cogvideox_sat.data.clip import ClipSpec, IndexRule, bucket_rule, load_clip, probe, webdataset_rule
from cogvideox_sat.data.latent_cache import LatentCache
from cogvideox_sat.data.shard_keys import CachedSample, shard_index_key
from cogvideox_sat.data.shards import RawSample, assign_shards, expand_shards, iter_shard
from cogvideox_sat.data.skips import BadSample, NoUsableSamples, SkipCounter, format_counts, report_skip
from cogvideox_sat.data.still import IMAGE_EXTS, image_size, load_still, still_shape
from cogvideox_sat.data.transforms import RESIZE_MODES, to_unit_range

VIDEO_EXTS = ("mp4", "avi", "mov", "mkv", "webm")
PIXEL_PIPELINE_VERSION = 1  # bump when decoding/sampling/resizing changes the pixels (invalidates caches)


class VideoDataset(IterableDataset):
    """Clips streamed from tar shards, split over data-parallel ranks and loader workers."""

    path_params: ClassVar[tuple[str, ...]] = ("latent_cache",)

    def __init__(
        self,
        path: str,
        image_size: Sequence[int],
        num_frames: int,
        fps: int,
        skip_frms_num: float = 0.0,
        nshards: int = sys.maxsize,
        seed: int = 1,
        meta_names: Sequence[str] | None = None,
        shuffle_buffer: int = 1000,
        include_dirs: str | None = None,
        txt_key: str = "caption",
        rank: int | None = None,
        world_size: int | None = None,
        buckets: Sequence[Sequence[int]] | None = None,
        resize: str = "bicubic",
        allow_empty_caption: bool = False,
        max_file_mb: float = 4096.0,
        max_frame_side: int = 8192,
        decode_timeout_s: float = 20.0,
        check_on_start: bool = True,
        latent_cache: str | None = None,
    ) -> None:
        super().__init__()
        self.shards = expand_shards(path, include_dirs)
        if not self.shards:
            raise NoUsableSamples(f"no shard found for path '{path}' (include_dirs: {include_dirs!r})")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.num_frames, self.fps, self.skip_frms_num = int(num_frames), fps, skip_frms_num
        self.nshards = nshards
        self.seed = random.randint(0, 1_000_000) if seed == -1 else seed  # official: -1 = random
        self.meta_names = list(meta_names) if meta_names else None
        self.shuffle_buffer = max(int(shuffle_buffer), 1)
        self.txt_key = txt_key
        self.buckets = parse_buckets(buckets) if buckets else None
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        self.resize = resize
        self.allow_empty_caption = allow_empty_caption
        self.max_file_bytes = int(max_file_mb * 2**20)
        self.max_frame_side = int(max_frame_side)
        self.decode_timeout_s = decode_timeout_s
        self.rank, self.world_size = _data_parallel_position(rank, world_size)
        self.skips = SkipCounter()
        self.latent_cache = LatentCache(latent_cache) if latent_cache else None
        self._index_keys = self._cached_shards() if self.latent_cache is not None else []
        if check_on_start:
            self._require_usable()

    @classmethod
    def create_dataset_function(cls, path: str, args: Any, **kwargs: Any) -> VideoDataset:
        """What the official training calls per `args.train_data` entry, with `data.params`."""
        return cls(path, **kwargs)

    def skip_counts(self) -> dict[str, int]:
        return self.skips.counts()

    def pixel_params(self) -> dict[str, Any]:
        """The preprocessing a cached latent depends on (part of every cache key)."""
        return {
            "size": list(self.image_size),
            "fps": self.fps,
            "num_frames": self.num_frames,
            "skip_frms_num": float(self.skip_frms_num),
            "buckets": [list(b) for b in self.buckets] if self.buckets else None,
            "resize": self.resize,
            "txt_key": self.txt_key,
            "version": PIXEL_PIPELINE_VERSION,
        }

    # ------------------------------------------------------------------ stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slot, num_slots = self.rank * num_workers + worker, self.world_size * num_workers
        # the same on model-parallel peers (same data-parallel rank), different per slot
        rng = random.Random(f"{self.seed}/{slot}/{num_slots}")
        if self.latent_cache is None:
            read, load = self._read_shard, self.process
        else:
            read, load = self._read_index, self.load_cached
        raw = _shuffled(self._raw_samples(slot, num_slots, read), self.shuffle_buffer, rng)
        for sample in raw:
            try:
                yield load(sample, rng)
            except BadSample as bad:
                report_skip(self.skips, bad)

    def _raw_samples(self, slot: int, num_slots: int, read: Callable[[int], Iterator[Any]]) -> Iterator[Any]:
        shards_read, epoch = 0, 0
        while shards_read < self.nshards:
            order = list(range(len(self.shards)))
            random.Random(f"{self.seed}/epoch{epoch}").shuffle(order)  # the same on every slot
            produced = 0
            for pos, every, offset in assign_shards(len(order), slot, num_slots):
                if shards_read >= self.nshards:
                    return
                shards_read += 1
                try:
                    for n, sample in enumerate(read(order[pos])):
                        if n % every == offset:
                            produced += 1
                            yield sample
                except BadSample as bad:
                    report_skip(self.skips, bad)
            if produced == 0:
                raise NoUsableSamples(
                    f"a whole pass over this worker's shards gave no sample (slot {slot} of {num_slots}, "
                    f"skipped so far: {format_counts(self.skips.counts())})"
                )
            epoch += 1

    def _read_shard(self, shard: int) -> Iterator[RawSample]:
        return iter_shard(self.shards[shard], self.max_file_bytes, self.meta_names)

    # ------------------------------------------------------------------ latent cache

    def _cached_shards(self) -> list[str | None]:
        """Each shard's index key in the cache (None: not cached, counted as a skip)."""
        params, keys = self.pixel_params(), []
        for shard in self.shards:
            try:
                key = shard_index_key(self.latent_cache.hashes.digest(shard), params)
            except OSError as err:
                report_skip(self.skips, BadSample("missing", shard, str(err)))
                key = None
            if key is not None and not self.latent_cache.has_index(key):
                report_skip(self.skips, BadSample("not_cached", shard, "run tools/build_latent_cache.py"))
                key = None
            keys.append(key)
        if not any(keys):
            raise NoUsableSamples(
                f"none of the {len(self.shards)} shard(s) ({self.shards[0]}, ...) is in latent cache "
                f"'{self.latent_cache.root}' for these data params: build it with "
                f"`python tools/build_latent_cache.py --base <the training configs> --cache-dir {self.latent_cache.root}`"
            )
        return keys

    def _read_index(self, shard: int) -> Iterator[CachedSample]:
        key = self._index_keys[shard]
        index = self.latent_cache.load_index(key) if key is not None else None
        if index is None:
            if key is None:
                return iter(())  # reported once, when the dataset was made
            raise BadSample("not_cached", self.shards[shard], "its cache index is unreadable: rebuild with tools/build_latent_cache.py")
        return (CachedSample(s["name"], tuple(s["keys"])) for s in index["samples"])

    def load_cached(self, sample: CachedSample, rng: random.Random) -> dict[str, Any]:
        """The cached item of one of the sample's windows, picked at random."""
        entry = self.latent_cache.load(sample.keys[rng.randrange(len(sample.keys))])
        if entry is None:
            raise BadSample("not_cached", sample.name, "run tools/build_latent_cache.py")
        return cached_item(self.latent_cache, *entry, self.fps)

    def caches_first_frames(self) -> bool:
        """Whether cached items carry `first_frame`, judged by the first cached entry (file headers only)."""
        if self.latent_cache is None or not self.latent_cache.has_first_frames:
            return False
        for shard in range(len(self.shards)):
            for sample in self._read_index(shard) if self._index_keys[shard] else ():
                return self.latent_cache.contains(sample.keys[0], ("first_frame",))
        return False

    # ------------------------------------------------------------------ one sample

    def process(self, sample: RawSample, rng: random.Random) -> dict[str, Any]:
        """Raw tar members -> official item; BadSample when the sample is unusable."""
        # 1. Video member (or a still image: a one-frame clip)
        ext = next((e for e in VIDEO_EXTS if e in sample.members), None)
        still = next((e for e in IMAGE_EXTS if e in sample.members), None)
        if ext is None and still is not None:
            return self.process_still(sample, still)
        if ext is None:
            big = next((e for e in VIDEO_EXTS + IMAGE_EXTS if e in sample.oversized), None)
            if big is not None:
                raise BadSample("too_large", f"{sample.name}.{big}", f"{sample.oversized[big]} bytes > max_file_mb")
            raise BadSample("missing", sample.name, f"no video member (has: {sorted(sample.members)})")
        name = f"{sample.name}.{ext}"
        video = sample.members[ext]
        if not video:
            raise BadSample("empty", name)
        # 2. Metadata and caption
        meta, text = self._meta_and_caption(sample, name)
        duration, source_fps = _as_float(meta.get("duration")), _as_float(meta.get("fps"))
        # 3. Too short, known from the metadata alone (official check, before decoding)
        if duration is not None and source_fps:
            needed = self.num_frames / self.fps + 2 * int(self.skip_frms_num) / source_fps
            if duration < needed:
                raise BadSample("too_short", name, f"{duration:g} s < {needed:g} s")
        # 4. Decode
        spec, rule = self._spec_and_rule(video, name, meta, duration, rng)
        clip = load_clip(video, name, spec, rule, self.decode_timeout_s)
        return {"mp4": to_unit_range(clip.frames), "txt": text, "num_frames": clip.num_frames, "fps": self.fps}

    def process_still(self, sample: RawSample, ext: str) -> dict[str, Any]:
        """A still image member -> one-frame item (`num_frames` 1) at its shape (see still.py)."""
        name = f"{sample.name}.{ext}"
        _, text = self._meta_and_caption(sample, name)
        data = sample.members[ext]
        h, w = image_size(data, name, self.max_frame_side) if self.buckets else self.image_size
        _, sh, sw = still_shape(self.buckets, self.image_size, h, w)
        clip = load_still(data, name, (sh, sw), self.resize, self.max_frame_side)
        return {"mp4": to_unit_range(clip.frames), "txt": text, "num_frames": 1, "fps": self.fps}

    def _meta_and_caption(self, sample: RawSample, name: str) -> tuple[dict, str]:
        meta = dict(sample.meta)
        if "json" in sample.members:
            try:
                meta.update(json.loads(sample.members["json"]))
            except ValueError:
                pass  # unreadable json: fall back to probing the video
        text = _caption(sample, meta, self.txt_key)
        if not text and not self.allow_empty_caption:
            raise BadSample("captionless", name)
        return meta, text

    def _spec_and_rule(self, video: bytes, name: str, meta: dict, duration: float | None, rng: random.Random) -> tuple[ClipSpec, IndexRule]:
        if self.buckets is None:
            spec = ClipSpec(self.image_size, float(self.fps), self.num_frames, self.skip_frms_num, "exact", self.max_frame_side, self.resize)
            return spec, webdataset_rule(spec, duration, rng)
        info, h, w = probe(video, name, self.decode_timeout_s, self.max_frame_side)
        avail = sampling.available_frames(info.num_frames, info.fps, float(self.fps), self.skip_frms_num)
        bucket = choose_bucket(self.buckets, avail, h, w)
        if bucket is None:
            raise BadSample("too_short", name, f"{avail} frames at {self.fps} fps fit no bucket")
        frames, bh, bw = self.buckets[bucket]
        spec = ClipSpec((bh, bw), float(self.fps), frames, self.skip_frms_num, "exact", self.max_frame_side, self.resize)
        return spec, bucket_rule(spec, rng)

    def _require_usable(self) -> None:
        """Read until one sample works (usually the first); NoUsableSamples if none does."""
        rng = random.Random(self.seed)
        read, load = (self._read_shard, self.process) if self.latent_cache is None else (self._read_index, self.load_cached)
        for shard in range(len(self.shards)):
            try:
                for sample in read(shard):
                    try:
                        load(sample, rng)
                        return
                    except BadSample as bad:
                        report_skip(self.skips, bad)
            except BadSample as bad:
                report_skip(self.skips, bad)
        raise NoUsableSamples(
            f"no usable sample in {len(self.shards)} shard(s) ({self.shards[0]}, ...): skipped "
            f"{format_counts(self.skips.counts())}; the warnings above name each sample"
        )


def _caption(sample: RawSample, meta: dict, txt_key: str) -> str:
    for source in (sample.members.get(txt_key), sample.members.get("txt"), meta.get(txt_key)):
        if source is None:
            continue
        text = source.decode("utf-8", errors="replace") if isinstance(source, bytes) else str(source)
        if text.strip():
            return text.strip()
    return ""


def _as_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _shuffled(samples: Iterator[RawSample], size: int, rng: random.Random) -> Iterator[RawSample]:
    """A shuffle buffer of `size` raw samples (1: no shuffling)."""
    buffer: list[RawSample] = []
    for sample in samples:
        buffer.append(sample)
        if len(buffer) < size:
            continue
        i = rng.randrange(len(buffer))
        buffer[i], buffer[-1] = buffer[-1], buffer[i]
        yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


def _data_parallel_position(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else the data-parallel position of this process (1 process without dist)."""
    if rank is not None and world_size is not None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        return rank, world_size
    if rank is not None or world_size is not None:
        raise ValueError("give both rank and world_size, or neither (taken from torch.distributed)")
    from cogvideox_sat import distributed

    return distributed.get_data_parallel_rank(), distributed.get_data_parallel_world_size()
