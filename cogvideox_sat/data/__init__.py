"""Video data: SFT folders, WebDataset shards, buckets, latent cache."""
