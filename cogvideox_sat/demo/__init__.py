"""Demo assets made on the spot: synthetic captioned clips, no network, no downloads."""
