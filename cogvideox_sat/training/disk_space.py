"""Full disks: recognise the failed write, say it in one line, warn once before it happens."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Optional

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# torch.save to a path reports a short write without errno ("unexpected pos", "file write failed")
_SHORT_WRITE = ("No space left on device", "Disk quota exceeded", "file write failed", "unexpected pos")
_warned: set[str] = set()


class DiskFullError(OSError):
    """A checkpoint did not fit on its file system; the previous checkpoint is still `latest`."""


def free_bytes(folder: str | os.PathLike) -> int:
    return shutil.disk_usage(folder).free


def is_disk_full(err: BaseException, folder: str | os.PathLike, needed: Optional[int] = None) -> bool:
    """Whether `err`, raised while writing into `folder`, means the file system ran out of space."""
    if isinstance(err, OSError) and err.errno in _NO_SPACE:
        return True
    if not isinstance(err, (OSError, RuntimeError)) or not any(s in str(err) for s in _SHORT_WRITE):
        return False
    if "No space left" in str(err) or "quota" in str(err):
        return True
    try:  # a short write without errno: full only if the space is indeed gone
        free = free_bytes(folder)
    except OSError:
        return False
    return free < (needed if needed else 1 << 20)


def disk_full_message(folder: Path, tag: str, needed: Optional[int], latest: Optional[str]) -> str:
    """The one line a full disk prints."""
    need = f"about {needed} bytes" if needed else "an unknown number of bytes"
    try:
        free = f"{free_bytes(folder)} bytes free"
    except OSError:
        free = "free space unknown"
    kept = f"`latest` still names {latest}" if latest else "no earlier checkpoint exists"
    return (f"checkpoint {tag} not saved: no space left in {folder} (the checkpoint needs {need}, {free}); "
            f"its partial folder was removed and {kept}")


def warn_if_short(folder: Path, last_bytes: Optional[int]) -> bool:
    """Warn once per folder when the free space is below the size of the last checkpoint."""
    if not last_bytes or str(folder) in _warned:
        return False
    free = free_bytes(folder)
    if free >= last_bytes:
        return False
    _warned.add(str(folder))
    print(f"warning: {folder} has {free} bytes free but the last checkpoint took {last_bytes} bytes: "
          "the next save will likely fail for lack of space (free some, or set keep_last_checkpoints)", flush=True)
    return True
