# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""sha256 of files and of the streams the backup copies (hashing readers and writers)."""

from __future__ import annotations

import hashlib

from ansible_collections.matrix.stack.plugins.module_utils.common.streams import ReadStream

CHUNK = 1024 * 1024


def sha256_file(path, chunk=CHUNK):
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


class HashingWriter:
    """File-like writer that counts and hashes what goes through it."""

    def __init__(self, raw):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.sha.update(data)
        self.size += len(data)
        self.raw.write(data)
        return len(data)

    def flush(self):
        self.raw.flush()

    def writable(self):
        return True

    @property
    def closed(self):
        return False


class HashingReader(ReadStream):
    """File-like reader that counts and hashes what is read through it."""

    def __init__(self, raw, progress=None):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0
        self.progress = progress

    def read(self, n=-1):
        data = self.raw.read(n if n is not None and n >= 0 else CHUNK)
        if data:
            self.sha.update(data)
            self.size += len(data)
        return data
