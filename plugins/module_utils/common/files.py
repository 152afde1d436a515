# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Crash-safe file writes: the one atomic-write helper of the collection, and the syncs it builds on."""

from __future__ import annotations

import contextlib
import os
import tempfile


def fsync_dir(path):
    """Make a rename or a new entry in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path):
    """Flush the file system holding path (one call instead of an fsync per file)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        os.sync()


@contextlib.contextmanager
def atomic_write(path, mode=0o600, owner=None, durable=True, prefix=".tmp-"):
    """Write ``path`` all at once: yields a binary file object on a temporary file in the same directory, created
    with ``mode`` (and ``owner``, a (uid, gid) pair, when given); when the block ends without an exception the file
    replaces ``path`` by rename, otherwise it is removed and ``path`` is left as it was.

    ``durable`` fsyncs the file before the rename and the directory after it; callers that write many files and
    sync the whole file system once at the end (``syncfs``) pass False.
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, owner[0], owner[1])
        with os.fdopen(fd, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(directory)
