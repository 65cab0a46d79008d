"""Video data: SFT folders, WebDataset shards, still images (one-frame clips), buckets, mixing
and split of several datasets, latent cache, bad-file tolerance.

`SFTDataset` and `VideoDataset` are the official `data_video.*` targets. Items are dicts with
`mp4` float (T, C, H, W) in [-1, 1], `txt`, `num_frames`, `fps` (plus `image` for I2V, or
a VAE latent as `mp4` plus `txt_emb` (and `first_frame`) when reading a latent cache). `skip_counts()` reports
the samples skipped so far, per reason, for the training log.
"""

from cogvideox_sat.data.buckets import BucketBatchedIterable, BucketBatchSampler, choose_bucket, dataset_bucket_ids, parse_buckets
from cogvideox_sat.data.cache_builder import BuildReport, build_latent_cache
from cogvideox_sat.data.encoders import CacheEncoders, check_cache_matches_model, model_fingerprint
from cogvideox_sat.data.latent_cache import LatentCache, StaleCacheError
from cogvideox_sat.data.sft_dataset import SFTDataset
from cogvideox_sat.data.shard_cache import build_shard_latent_cache
from cogvideox_sat.data.skips import REASONS, BadSample, NoUsableSamples, format_counts, skip_counts
from cogvideox_sat.data.webdataset import VideoDataset

__all__ = [
    "SFTDataset",
    "VideoDataset",
    "BucketBatchSampler",
    "BucketBatchedIterable",
    "choose_bucket",
    "dataset_bucket_ids",
    "parse_buckets",
    "LatentCache",
    "CacheEncoders",
    "build_latent_cache",
    "build_shard_latent_cache",
    "BuildReport",
    "check_cache_matches_model",
    "model_fingerprint",
    "StaleCacheError",
    "REASONS",
    "BadSample",
    "NoUsableSamples",
    "format_counts",
    "skip_counts",
]
