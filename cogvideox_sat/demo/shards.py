"""WebDataset tar shards written from bytes, for tests, benchmarks and demos of VideoDataset."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def write_shard(path: str | Path, samples: dict[str, dict[str, bytes]]) -> Path:
    """A tar shard with members `<name>.<ext>`, samples and members in the order given."""
    with tarfile.open(path, "w") as tar:
        for name, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{name}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return Path(path)
