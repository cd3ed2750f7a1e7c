"""Durable file writes shared by every part that keeps files (index builds, calibrations,
fitted tier targets): flush to disk, and replace a file atomically so that a crash leaves
either the old or the new content, never a torn one."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: str | Path) -> None:
    """Flush a file's or a folder's data and metadata (a folder's: its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: str | Path, data: bytes) -> None:
    """Write a file and flush it to disk (not atomic: for files nothing reads yet)."""
    with Path(path).open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Replace `path` with `data` atomically and durably: a temporary file in the same folder,
    fsync, rename over `path`, fsync the folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_synced(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path
