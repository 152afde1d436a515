# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A base for the read-only byte streams of the backup code (pipes, exec sessions, hashing readers)."""

from __future__ import annotations


class ReadStream:
    """Subclasses implement read(n). readinto(), readable() and closed make them acceptable wherever a binary
    file object is read (pyrage, tarfile, shutil.copyfileobj)."""

    def read(self, n=-1):
        raise NotImplementedError

    def readinto(self, buf):
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def readable(self):
        return True

    @property
    def closed(self):
        return False
