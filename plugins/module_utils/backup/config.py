# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The resolved options of one matrix_backup run (built by the module from its parameters, by tests directly)."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from ansible_collections.matrix.stack.plugins.module_utils.backup.pg_clients import ClientFinder


@dataclasses.dataclass(frozen=True)
class Config:  # pylint: disable=too-many-instance-attributes
    """Everything the operations need; sources and targets are objects built by the module."""

    dest: Optional[str] = None                # the backup repository (a directory)
    server_name: Optional[str] = None
    set_name: str = "latest"                  # a set id, "latest" or (verify) "all"
    force: bool = False
    check_mode: bool = False
    lock_wait: int = 0                        # seconds to wait for the repository lock

    # database: a backup.pg DirectPg / PodPg, and the local PostgreSQL clients (pg_restore --list of verify)
    pg: Any = None
    pg_clients: Any = dataclasses.field(default_factory=ClientFinder)
    jobs: int = 2                             # pg_restore --jobs from a local unencrypted dump

    # media: a backup.media LocalMedia / PodMedia
    media: Any = None
    media_encrypt: bool = False
    media_rehash: bool = False
    media_workers: int = 4                    # threads copying local media files
    parallel: bool = True                     # overlap the media copy with the end of the dump
    verify_media: str = "checksum"            # checksum | exists

    # encryption (age)
    recipients: tuple = ()                    # parsed recipients
    recipient_strings: tuple = ()             # as given, recorded in the manifest
    identities: tuple = ()                    # parsed identities

    # Kubernetes: Secrets to back up / restore, and the Synapse Deployment scaled around a restore
    kube_api: Any = None                      # kubernetes.client.ApiClient
    secrets_namespace: Optional[str] = None
    secrets_selector: Optional[str] = None
    secret_files: tuple = ()
    allow_unencrypted_secrets: bool = False
    synapse_version: Optional[str] = None
    synapse_url: Optional[str] = None
    synapse_deployment: Optional[str] = None
    synapse_namespace: Optional[str] = None
    synapse_replicas: Optional[int] = None
    health_url: Optional[str] = None
    health_timeout: int = 300
    scale_timeout: int = 300

    keep: dict = dataclasses.field(default_factory=dict)   # retention: keep_last, keep_daily, ...
    s3: Any = None                            # backup.s3 S3Copy: the off-site copy

    @property
    def encrypted(self):
        return bool(self.recipients)

    @property
    def scales_synapse(self):
        return bool(self.synapse_deployment and self.kube_api is not None)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)
