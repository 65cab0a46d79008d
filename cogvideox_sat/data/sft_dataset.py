"""SFTDataset: a fine-tuning folder of captioned clips (target `data_video.SFTDataset`).

Drop-in for the official class: same constructor (`data_dir, video_size, fps, max_num_frames,
skip_frms_num`), same `create_dataset_function(path, args, **params)` the official training
calls with `data.params`, same items:
    mp4         float32 (T, C, H, W) in [-1, 1], T = max_num_frames (padded with the last frame)
    txt         str caption
    num_frames  int, frames before padding (official label)
    fps         the configured fps
Same frame sampling (see sampling.py for the quirks kept and the crashes fixed), same
aspect-keeping resize and center crop.

Differences, on purpose:
- nothing is decoded in __init__ and no video is held in RAM (the official class decoded
  every clip at start, #127); only the sampled frames are decoded, per item;
- bad files are skipped, not fatal: missing, zero-byte, too large, captionless, corrupt,
  undecodable, too short or hanging (decode_timeout_s) files are replaced by the next good
  sample, with a warning naming the file and per-reason counts in `skip_counts()`; a folder
  with no usable sample fails in __init__ with a message saying why;
- a caption-less clip is skipped (the official class trained it on an empty caption; set
  `allow_empty_caption: true` for that);
- files are listed in sorted order (the official order was the filesystem's).
Additions: the diffusers layout (prompts.txt + videos.txt [+ images.txt]), `with_image` (I2V
first frame as `image`, (1, C, H, W) in [-1, 1]), `fps_sampling: exact`, `resize: bilinear`
(much faster, not the official pixels), `buckets`, `still_images` (image files train as
one-frame clips, see still.py and layouts.py), and
`latent_cache` (cached items: see `SFTDataset` below and latent_cache.py).

Shapes: `shapes` lists the (frames, height, width) the items come in and `bucket_ids` says
which one each sample has (None when every sample has the one shape `shapes[0]`, as a plain
video folder): with `buckets` the buckets come first, in their order; stills add (1, h, w).
The training loader batches samples of one shape only (buckets.BucketBatchSampler).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from cogvideox_sat.data import sampling
from cogvideox_sat.data.buckets import choose_bucket, parse_buckets
from cogvideox_sat.data.clip import FPS_SAMPLING, ClipSpec, bucket_rule, load_clip, probe, sft_rule
from cogvideox_sat.data.hashing import HashMemo, digest_of
from cogvideox_sat.data.cached_items import cached_item
from cogvideox_sat.data.latent_cache import LatentCache
from cogvideox_sat.data.layouts import FolderIndex, count_images, index_folder, read_caption
from cogvideox_sat.data.skips import BadSample, NoUsableSamples, SkipCounter, format_counts, report_skip
from cogvideox_sat.data.still import image_size, load_still, read_image, still_shape
from cogvideox_sat.data.transforms import RESIZE_MODES, resize_center_crop, to_unit_range

PIXEL_PIPELINE_VERSION = 1  # bump when decoding/sampling/resizing changes the pixels (invalidates caches)


class SFTDataset(Dataset):
    """Captioned clips of a fine-tuning folder (official or diffusers layout).

    With `latent_cache` (a folder built by tools/build_latent_cache.py) nothing is decoded and
    items are, for the engine's official `latent_input: true` path:
        mp4         unscaled VAE latent (C', T', H', W') (a fresh posterior draw when the cache
                    holds moments), which the engine only permutes and scales
        txt_emb     (L, D) T5 embedding of the caption (before classifier-free dropout)
        first_frame float (C, 1, H, W) in [-1, 1]: the clip's frame 0 as the pixel path has it,
                    which image-to-video training noises and encodes (when the cache has it)
        txt, num_frames, fps   as without the cache (+ `image` as without the cache)
    A sample missing from the cache is skipped ("not_cached").
    """

    path_params: ClassVar[tuple[str, ...]] = ("data_dir", "latent_cache")

    def __init__(
        self,
        data_dir: str,
        video_size: Sequence[int],
        fps: int,
        max_num_frames: int,
        skip_frms_num: float = 3,
        layout: str = "auto",
        fps_sampling: str = "official",
        resize: str = "bicubic",
        buckets: Sequence[Sequence[int]] | None = None,
        with_image: bool = False,
        allow_empty_caption: bool = False,
        max_file_mb: float = 4096.0,
        max_frame_side: int = 8192,
        decode_timeout_s: float = 20.0,
        latent_cache: str | None = None,
        caption_column: str = "prompts.txt",
        video_column: str = "videos.txt",
        image_column: str = "images.txt",
        still_images: bool = False,
    ) -> None:
        super().__init__()
        if fps_sampling not in FPS_SAMPLING:
            raise ValueError(f"fps_sampling must be one of {FPS_SAMPLING}, got {fps_sampling!r}")
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        self.data_dir = str(data_dir)
        self.video_size = (int(video_size[0]), int(video_size[1]))
        self.fps = fps
        self.max_num_frames = int(max_num_frames)
        self.skip_frms_num = skip_frms_num
        self.fps_sampling = fps_sampling
        self.resize = resize
        self.with_image = with_image
        self.allow_empty_caption = allow_empty_caption
        self.max_file_bytes = int(max_file_mb * 2**20)
        self.max_frame_side = int(max_frame_side)
        self.decode_timeout_s = decode_timeout_s
        self.still_images = bool(still_images)
        self.skips = SkipCounter()
        self._bad: set[int] = set()  # per process: samples known bad, never retried

        # 1. Index the folder; drop what fails cheap checks (stat, caption file)
        index = index_folder(self.data_dir, layout, caption_column, video_column, image_column, self.still_images)
        found = len(index)
        self._index = self._screen(index)
        # 2. Shapes: with buckets or stills, probe each file's size (and length) and give it a shape
        self.buckets = parse_buckets(buckets) if buckets else None
        self.shapes: list[tuple[int, int, int]] = list(self.buckets or [(self.max_num_frames, *self.video_size)])
        self.bucket_ids: np.ndarray | None = None
        if self.buckets or (self._index.stills is not None and self._index.stills.any()):
            self._index, self.bucket_ids = self._assign_shapes(self._index)
            self._members = {int(b): np.flatnonzero(self.bucket_ids == b) for b in np.unique(self.bucket_ids)}
        # 3. Latent cache (opt-in)
        self.latent_cache = LatentCache(latent_cache) if latent_cache else None
        self.hashes = self.latent_cache.hashes if self.latent_cache else HashMemo()
        # 4. Fail now, with the reasons, if not one sample loads
        self._require_usable(found)

    # ------------------------------------------------------------------ official API

    @classmethod
    def create_dataset_function(cls, path: str, args: Any, **kwargs: Any) -> SFTDataset:
        """What the official training calls per `args.train_data` entry, with `data.params`."""
        return cls(data_dir=path, **kwargs)

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        for i in self._fallbacks(index):
            try:
                return self._load(i)
            except BadSample as bad:
                report_skip(self.skips, bad)
                self._bad.add(i)
        raise NoUsableSamples(
            f"every sample of '{self.data_dir}' that could replace sample {index} failed "
            f"(skipped: {format_counts(self.skips.counts())})"
        )

    def skip_counts(self) -> dict[str, int]:
        """Samples skipped so far, per reason (this process and its loader workers)."""
        return self.skips.counts()

    # ------------------------------------------------------------------ per-sample pieces

    def clip_spec(self, i: int) -> ClipSpec:
        """How sample `i` becomes pixels (its bucket's shape when bucketing; 1 frame for a still)."""
        if self.bucket_ids is not None and (self.buckets or self._index.is_still(i)):
            frames, h, w = self.shapes[int(self.bucket_ids[i])]
            size, num_frames, fps_sampling = (h, w), frames, "exact"
        else:
            size, num_frames, fps_sampling = self.video_size, self.max_num_frames, self.fps_sampling
        return ClipSpec(size, float(self.fps), num_frames, self.skip_frms_num, fps_sampling, self.max_frame_side, self.resize)

    def caption(self, i: int) -> str:
        """Caption of sample `i`; BadSample('captionless') when empty and not allowed."""
        idx = self._index
        text = read_caption(str(idx.labels[i])) if idx.labels is not None else str(idx.captions[i])
        if not text and not self.allow_empty_caption:
            raise BadSample("captionless", self._caption_source(i))
        return text

    def load_pixels(self, i: int) -> dict[str, Any]:
        """The item of sample `i` decoded from its video (no replacement; BadSample on failure)."""
        caption = self.caption(i)
        spec = self.clip_spec(i)
        path = str(self._index.videos[i])
        if self._index.is_still(i):
            clip = load_still(path, path, spec.size, spec.resize, self.max_frame_side)
        else:
            rule = bucket_rule(spec) if self.buckets else sft_rule(spec)
            clip = load_clip(path, path, spec, rule, self.decode_timeout_s)
        item: dict[str, Any] = {"mp4": to_unit_range(clip.frames), "txt": caption, "num_frames": clip.num_frames, "fps": self.fps}
        if self.with_image or self._index.images is not None:
            item["image"] = to_unit_range(self._first_image(i, clip.frames[:1], spec))
        return item

    def sample_key(self, i: int, hashes: HashMemo | None = None) -> str:
        """What a cache entry of sample `i` depends on, apart from the model weights."""
        hashes = hashes or self.hashes
        path = str(self._index.videos[i])
        image = str(self._index.images[i]) if self._index.images is not None else None
        spec = self.clip_spec(i)
        if self._index.is_still(i):
            pixels = {"still": True, "size": spec.size, "resize": spec.resize, "version": PIXEL_PIPELINE_VERSION}
            return digest_of({"video": hashes.digest(path), "caption": self.caption(i), "image": hashes.digest(image) if image else None, "pixels": pixels})
        return digest_of(
            {
                "video": hashes.digest(path),
                "caption": self.caption(i),
                "image": hashes.digest(image) if image else None,
                "pixels": {
                    "size": spec.size,
                    "fps": spec.fps,
                    "num_frames": spec.num_frames,
                    "skip_frms_num": float(spec.skip_frms_num),
                    "sampling": "bucket" if self.buckets else spec.fps_sampling,
                    "resize": spec.resize,
                    "version": PIXEL_PIPELINE_VERSION,
                },
            }
        )

    def caches_first_frames(self) -> bool:
        """Whether cached items carry `first_frame`, judged by the first entry present (reads file
        headers only; image-to-video training checks this before its first step)."""
        if self.latent_cache is None or not self.latent_cache.has_first_frames:
            return False
        for i in range(len(self)):
            try:
                key = self.sample_key(i)
            except OSError:
                continue
            if self.latent_cache.contains(key):
                return self.latent_cache.contains(key, ("first_frame",))
        return False

    def source(self, i: int) -> str:
        return str(self._index.videos[i])

    # ------------------------------------------------------------------ internals

    def _load(self, i: int) -> dict[str, Any]:
        if self.latent_cache is None:
            return self.load_pixels(i)
        try:
            key = self.sample_key(i)
        except OSError as err:
            raise BadSample("missing", self.source(i), str(err)) from None
        entry = self.latent_cache.load(key)
        if entry is None:
            raise BadSample("not_cached", self.source(i), "run tools/build_latent_cache.py")
        tensors, meta = entry
        item = cached_item(self.latent_cache, tensors, meta, self.fps)
        frame0 = tensors.get("first_frame") if self.latent_cache.has_first_frames else None
        if self.with_image or self._index.images is not None:
            item["image"] = to_unit_range(self._cached_image(tensors, frame0, i))
        return item

    def _cached_image(self, tensors: dict[str, torch.Tensor], frame0: torch.Tensor | None, i: int) -> torch.Tensor:
        """uint8 (1, C, H, W) `image` of an entry: stored apart, else its frame 0 (format 1: `first_frame`)."""
        if "image" in tensors:
            return tensors["image"]
        if not self.latent_cache.has_first_frames and "first_frame" in tensors:
            return tensors["first_frame"]
        if frame0 is not None:
            return frame0.permute(1, 0, 2, 3)
        raise BadSample("not_cached", self.source(i), "the cache entry has no first frame; rebuild it without --no-first-frame")

    def _first_image(self, i: int, first_frame: torch.Tensor, spec: ClipSpec) -> torch.Tensor:
        """uint8 (1, C, H, W): the image of images.txt (resized like the video), else the first frame."""
        if self._index.images is None:
            return first_frame
        path = str(self._index.images[i])
        return resize_center_crop(read_image(path, path), spec.size, spec.resize)

    def _fallbacks(self, index: int) -> Iterator[int]:
        """`index`, then the following samples (same bucket), skipping known-bad ones."""
        if self.bucket_ids is None:
            order = (np.arange(len(self)) + index) % len(self)
        else:
            members = self._members[int(self.bucket_ids[index])]
            start = int(np.searchsorted(members, index))
            order = np.roll(members, -start)
        return (int(i) for i in order if int(i) not in self._bad)

    def _caption_source(self, i: int) -> str:
        idx = self._index
        if idx.labels is not None:
            return f"{idx.labels[i]} (caption of {idx.videos[i]})"
        return f"line {i + 1} of the prompts (caption of {idx.videos[i]})"

    def _screen(self, index: FolderIndex) -> FolderIndex:
        """Drop entries whose files are missing, empty, too large or caption-less (no decoding)."""
        keep = np.ones(len(index), dtype=bool)
        for i in range(len(index)):
            try:
                self._check_file(str(index.videos[i]))
                if index.images is not None:
                    self._check_file(str(index.images[i]))
                if not self.allow_empty_caption:
                    if index.labels is not None:
                        label = str(index.labels[i])
                        if not os.path.isfile(label) or os.path.getsize(label) == 0:
                            raise BadSample("captionless", f"{label} (caption of {index.videos[i]})", "missing or empty")
                    elif not str(index.captions[i]).strip():
                        raise BadSample("captionless", f"line {i + 1} of the prompts (caption of {index.videos[i]})")
            except BadSample as bad:
                report_skip(self.skips, bad)
                keep[i] = False
        return index.select(keep)

    def _check_file(self, path: str) -> None:
        try:
            size = os.stat(path).st_size
        except OSError:
            raise BadSample("missing", path) from None
        if not os.path.isfile(path):
            raise BadSample("missing", path, "not a file")
        if size == 0:
            raise BadSample("empty", path)
        if size > self.max_file_bytes:
            raise BadSample("too_large", path, f"{size} bytes > max_file_mb ({self.max_file_bytes} bytes)")

    def _assign_shapes(self, index: FolderIndex) -> tuple[FolderIndex, np.ndarray]:
        """The shape of every sample: a video's bucket (probing one decoded frame, a few clips at a
        time) or the video size; a still's (1, h, w) from its header. Shape ids index `shapes`."""

        def one(i: int) -> tuple[int, int, int] | BadSample:
            path = str(index.videos[i])
            try:
                if index.is_still(i):
                    return still_shape(self.buckets, self.video_size, *image_size(path, path, self.max_frame_side))
                if not self.buckets:
                    return (self.max_num_frames, *self.video_size)
                info, h, w = probe(path, path, self.decode_timeout_s, self.max_frame_side)
            except BadSample as bad:
                return bad
            avail = sampling.available_frames(info.num_frames, info.fps, float(self.fps), self.skip_frms_num)
            bucket = choose_bucket(self.buckets, avail, h, w)
            if bucket is None:
                shortest = min(f for f, _, _ in self.buckets)
                return BadSample("too_short", path, f"{avail} frames at {self.fps} fps, the shortest bucket needs {shortest}")
            return self.buckets[bucket]

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            results = list(pool.map(one, range(len(index))))
        ids = np.full(len(index), -1, dtype=np.int64)
        for i, r in enumerate(results):
            if isinstance(r, BadSample):
                report_skip(self.skips, r)
                continue
            if r not in self.shapes:
                self.shapes.append(r)
            ids[i] = self.shapes.index(r)
        keep = ids >= 0
        return index.select(keep), ids[keep]

    def _require_usable(self, found: int) -> None:
        for i in range(len(self)):
            try:
                self._load(i)
                return
            except BadSample as bad:
                report_skip(self.skips, bad)
                self._bad.add(i)
        hint = " (is the latent cache built for this data and these params?)" if self.latent_cache else ""
        if not found and not self.still_images and count_images(self.data_dir):
            hint = f" ({count_images(self.data_dir)} image files are there: set data.params.still_images: true to train on them as one-frame clips)"
        raise NoUsableSamples(
            f"no usable sample in '{self.data_dir}': {found} {'files' if self.still_images else 'videos'} found, skipped: "
            f"{format_counts(self.skips.counts())}{hint}; the warnings above name each file"
        )
