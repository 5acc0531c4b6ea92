"""Crash-safe file writes, shared by model files and stream snapshots."""
from __future__ import annotations

import os
import tempfile
from typing import Callable


def atomic_write(path, write: Callable, prefix: str = ".dse-") -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, fsync it, give it the
    usual permissions (0666 & ~umask; mkstemp makes 0600) and rename it over ``path``, then
    fsync the folder. A crash at any point leaves either the old file or the new one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
