#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: matrix_backup
short_description: Back up, verify, restore and prune a Synapse homeserver (database, media, secrets)
version_added: 0.1.0
description:
  - Takes consistent backups of a Synapse homeserver into a backup repository (a directory), following
    Synapse's guidance. The database is dumped first with C(pg_dump -Fc --exclude-table-data=e2e_one_time_keys_json),
    then the local media (C(local_content/) and C(local_thumbnails/); remote and URL-preview caches are skipped),
    then the Secrets managed by M(matrix.stack.matrix_secret) (signing key included) and optional secret files.
  - The dump and the media are streamed straight into the repository, never copied to a temporary file inside
    a pod; memory use does not depend on the database or media size.
  - Media are stored once, content-addressed by sha256, and shared by all sets. A backup reads and stores only
    the media files that are not in the previous set (local media are never rewritten by Synapse), and each
    set has an index of every file (path, size, sha256), so any set restores alone, without chain replay.
  - A set is written into a temporary directory and renamed into place after its C(COMPLETE) marker is written
    and synced; a set without the marker is never listed, verified, restored or counted by retention.
  - O(mode=verify) recomputes every checksum and checks the dump with C(pg_restore --list) without changing anything.
  - O(mode=restore) verifies first, refuses a set made for another server name and a non-empty database (unless
    O(force)), scales the Synapse Deployment to 0, recreates the database (UTF8, C collation, C(template0)),
    runs C(pg_restore) (in parallel from a local unencrypted dump), truncates C(e2e_one_time_keys_json), restores
    media and secrets, scales Synapse back and waits for C(/health).
  - O(mode=prune) applies the retention policy and deletes the media objects no kept set references.
  - Encryption with age (one or more recipients) covers the dump, the secrets and the manifest, and the media
    when O(media.encrypt) is set.
author:
  - matrix.stack contributors (!UNKNOWN)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    description:
      - O(mode=backup) reports what would be copied (database size, number and size of new media files).
      - O(mode=restore) verifies the set and reports the plan. O(mode=prune) reports what would be deleted.
  diff_mode:
    support: full
    description: The list of completed sets before and after a backup or prune.
options:
  mode:
    description: What to do.
    type: str
    choices: [backup, restore, verify, prune]
    default: backup
  dest:
    description:
      - Backup repository directory (created by the first backup). It holds C(repo.json), C(media/) and C(sets/).
    type: path
    required: true
  set:
    description:
      - Set to restore or verify, by its ID (for example V(20260101T030000Z)) or V(latest).
      - O(mode=verify) also accepts V(all).
    type: str
    default: latest
  server_name:
    description:
      - The homeserver's C(server_name). Recorded in every set; required for O(mode=backup).
      - O(mode=restore) refuses a set made for another server name unless O(force=true).
    type: str
  force:
    description:
      - Restore over a non-empty database (it is dropped and recreated) and accept a server name mismatch.
    type: bool
    default: false
  database:
    description:
      - The PostgreSQL database of Synapse, either reached directly (O(database.host)) with client binaries
        on the Ansible host, or inside the PostgreSQL pod (O(database.pod)) through the Kubernetes exec API.
      - Without O(database.host) and O(database.pod) no database is dumped or restored (a restore then only puts
        back media and secrets); O(database.pg_bin_dir) and O(database.pg_bin_search) are still used by O(mode=verify).
      - "PostgreSQL majors: with O(database.host) the client binaries of the server's major are used, found as
        described under O(database.pg_bin_search); with O(database.pod) the pod's own binaries are used.
        O(mode=verify) lists the dump with a C(pg_restore) of the dump's major (recorded in the set).
        O(mode=restore) refuses, before changing anything, a dump of a newer major than the target server."
    type: dict
    suboptions:
      name:
        description: Database name.
        type: str
        default: synapse
      host:
        description: Host of a directly reachable PostgreSQL server (external PostgreSQL, tests).
        type: str
      port:
        description: Port of O(database.host).
        type: int
        default: 5432
      user:
        description:
          - User to connect as. With O(database.pod) the client runs inside the pod over the local socket
            (the official image trusts it), so no password is needed.
          - A restore needs the right to create databases.
        type: str
        default: postgres
      password:
        description: Password of O(database.user) (direct connection only); passed to the client in the environment.
        type: str
      owner:
        description: Owner of the recreated database and of the restored objects (default O(database.user)).
        type: str
      pod:
        description: Name of the PostgreSQL pod to exec into.
        type: str
      namespace:
        description: Namespace of O(database.pod).
        type: str
      container:
        description: Container of O(database.pod) (default the pod's first container).
        type: str
      pg_bin_dir:
        description:
          - Directory with C(pg_dump), C(pg_restore) and C(psql) on the Ansible host, used instead of searching
            O(database.pg_bin_search); for direct connections and by O(mode=verify) (C(pg_restore --list)).
          - Refused when older than the server's major (or, for O(mode=verify), than the dump's major).
        type: path
      pg_bin_search:
        description:
          - Where to look for the client binaries of a PostgreSQL major when O(database.pg_bin_dir) is not set,
            in order; C({major}) stands for the major (for example V(17)). The directories of C(PATH) come last.
          - The binaries of exactly the needed major are used (the server's major for a backup or a restore, the
            dump's major for a verify), else the oldest newer ones found; none is an error naming the major and
            the package to install.
          - The default covers Debian/Ubuntu (also with the PGDG apt repository, package C(postgresql-client-<major>)),
            the PGDG RPM packages (C(postgresql<major>)) and the backup image (C(/opt/postgresql/<major>)).
        type: list
        elements: str
        default: ["/usr/lib/postgresql/{major}/bin", "/usr/pgsql-{major}/bin", "/opt/postgresql/{major}/bin"]
      jobs:
        description: Parallel C(pg_restore) jobs (only for an unencrypted dump restored through a direct connection).
        type: int
        default: 2
      compress:
        description: C(pg_dump) compression level (0-9); default is pg_dump's own.
        type: int
  media:
    description:
      - Synapse's media store, either a local path or a path inside a pod (O(media.pod), needs GNU C(find) and C(tar)
        in the container, as in the Synapse image).
    type: dict
    suboptions:
      path:
        description: Path of the media store (the directory that contains C(local_content)).
        type: str
        required: true
      pod:
        description: Pod that mounts the media volume (the Synapse pod).
        type: str
      namespace:
        description: Namespace of O(media.pod).
        type: str
      container:
        description: Container of O(media.pod).
        type: str
      encrypt:
        description:
          - Encrypt media objects too (needs O(encryption.recipients)). Fixed when the repository is created.
        type: bool
        default: false
      rehash:
        description: Read and store every media file again instead of trusting the previous set's index.
        type: bool
        default: false
  secrets:
    description: Secrets to include in the backup and to put back on restore.
    type: dict
    suboptions:
      namespace:
        description: Namespace whose Secrets (selected by O(secrets.label_selector)) are backed up and restored.
        type: str
      label_selector:
        description: Label selector of the Secrets to back up (default those managed by M(matrix.stack.matrix_secret)).
        type: str
        default: matrix.stack/secret=true
      files:
        description: Secret files (for example the signing key of a Synapse outside Kubernetes), restored to the same path.
        type: list
        elements: path
        default: []
      allow_unencrypted:
        description:
          - Allow storing secrets without O(encryption.recipients) (file mode 0600). Without it, a backup that
            includes secrets and has no recipient fails.
        type: bool
        default: false
  encryption:
    description: age encryption of the dump, secrets and manifest (and media when O(media.encrypt)).
    type: dict
    suboptions:
      recipients:
        description: age public keys (V(age1...)) or SSH public keys; each one can decrypt the set.
        type: list
        elements: str
        default: []
      identities:
        description: age private keys (V(AGE-SECRET-KEY-1...)) for O(mode=restore) and O(mode=verify).
        type: list
        elements: str
        default: []
      identity_file:
        description: File with age private keys (one per line, C(#) comments), instead of O(encryption.identities).
        type: path
  retention:
    description: Retention policy for O(mode=prune). The newest set is always kept.
    type: dict
    suboptions:
      keep_last:
        description: Keep the N newest sets.
        type: int
        default: 0
      keep_daily:
        description: Keep the newest set of each of the last N days that have a set.
        type: int
        default: 0
      keep_weekly:
        description: Keep the newest set of each of the last N ISO weeks that have a set.
        type: int
        default: 0
      keep_monthly:
        description: Keep the newest set of each of the last N months that have a set.
        type: int
        default: 0
  synapse:
    description: The Synapse server being backed up or restored.
    type: dict
    suboptions:
      version:
        description: Synapse version to record in the manifest (otherwise asked from O(synapse.url)).
        type: str
      url:
        description: Base URL of Synapse, used to read its version (C(/_matrix/federation/v1/version)).
        type: str
      deployment:
        description:
          - Synapse Deployment scaled to 0 during a restore and back afterwards. Without it the module does not
            stop Synapse; stop it yourself before restoring.
        type: str
      namespace:
        description: Namespace of O(synapse.deployment).
        type: str
      replicas:
        description: Replicas after the restore (default the count before it).
        type: int
      health_url:
        description: URL polled after the restore until it answers 200 (for example V(http://synapse:8008/health)).
        type: str
      health_timeout:
        description: Seconds to wait for O(synapse.health_url) (and for the pods to stop when scaling down).
        type: int
        default: 300
  verify_media:
    description: V(checksum) reads every media object; V(exists) only checks they are present.
    type: str
    choices: [checksum, exists]
    default: checksum
  s3:
    description:
      - An off-site copy of the repository in S3-compatible object storage, with the same layout under O(s3.prefix).
      - V(backup) copies every complete local set the bucket lacks (media objects first, the set's C(COMPLETE)
        marker last, so an interrupted copy never looks complete and the next backup finishes it).
      - V(prune) applies O(retention) to the copy as well. V(verify) and V(restore) first download the requested
        set (V(latest) means the newest set in the bucket) into O(dest), checking every file against its
        sha256, then work on that local copy (on a new machine, O(dest) can start empty).
      - One repository per bucket and prefix; object storage has no locks.
    type: dict
    suboptions:
      bucket:
        description: Bucket name.
        type: str
        required: true
      prefix:
        description: Key prefix of the repository in the bucket.
        type: str
        default: ""
      endpoint_url:
        description: URL of an S3-compatible service (MinIO, Ceph RGW, Garage...); AWS S3 when omitted.
        type: str
      region:
        description: Region name.
        type: str
        default: us-east-1
      access_key:
        description: Access key id (else the usual AWS environment variables or files).
        type: str
      secret_key:
        description: Secret access key.
        type: str
      ca_bundle:
        description: CA certificate bundle for the endpoint's TLS certificate.
        type: path
      validate_certs:
        description: Whether to validate the endpoint's TLS certificate.
        type: bool
        default: true
  lock_timeout:
    description: Seconds to wait for another operation on the same repository to finish.
    type: int
    default: 0
  exec_timeout:
    description: Seconds without data after which a Kubernetes exec stream is considered dead.
    type: int
    default: 600
notes:
  - Secrets are never returned. Without encryption they are stored with file mode 0600 and only when
    O(secrets.allow_unencrypted=true).
  - The repository is locked (C(flock)) during an operation; backup and prune are exclusive.
  - See the collection's C(docs/backup-restore.md) for disaster recovery and off-site copies.
requirements:
  - pyrage (for encryption)
  - kubernetes (for pods, Secrets and scaling)
  - PostgreSQL client binaries (C(pg_dump), C(pg_restore), C(psql)) of the server's major (see O(database.pg_bin_search))
  - boto3 (for O(s3))
"""

EXAMPLES = r"""
- name: Back up from inside the cluster's pods, encrypted
  matrix.stack.matrix_backup:
    mode: backup
    dest: /srv/backups/matrix
    server_name: example.org
    database: {pod: postgres-0, namespace: matrix, name: synapse, user: synapse}
    media: {pod: synapse-main-0, namespace: matrix, path: /data/media_store}
    secrets: {namespace: matrix}
    encryption:
      recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]

- name: Verify the latest set
  matrix.stack.matrix_backup:
    mode: verify
    dest: /srv/backups/matrix
    encryption: {identity_file: /root/.config/matrix-backup/age.key}

- name: Restore the latest set into a fresh cluster
  matrix.stack.matrix_backup:
    mode: restore
    dest: /srv/backups/matrix
    server_name: example.org
    database: {pod: postgres-0, namespace: matrix, name: synapse, user: postgres, owner: synapse}
    media: {pod: synapse-main-0, namespace: matrix, path: /data/media_store}
    secrets: {namespace: matrix}
    synapse: {deployment: synapse-main, namespace: matrix, health_url: "http://127.0.0.1:8008/health"}
    encryption: {identity_file: /root/.config/matrix-backup/age.key}

- name: Keep 7 daily, 4 weekly and 6 monthly sets, here and in the off-site copy
  matrix.stack.matrix_backup:
    mode: prune
    dest: /srv/backups/matrix
    retention: {keep_daily: 7, keep_weekly: 4, keep_monthly: 6}
    s3: {bucket: matrix-backups, endpoint_url: "https://s3.example.net", access_key: "{{ s3_key }}", secret_key: "{{ s3_secret }}"}

- name: Disaster recovery on a new machine, from the off-site copy (dest starts empty)
  matrix.stack.matrix_backup:
    mode: restore
    dest: /srv/backups/matrix
    server_name: example.org
    s3: {bucket: matrix-backups, endpoint_url: "https://s3.example.net", access_key: "{{ s3_key }}", secret_key: "{{ s3_secret }}"}
    database: {pod: postgres-0, namespace: matrix, name: synapse, user: postgres, owner: synapse}
    secrets: {namespace: matrix}
    encryption: {identity_file: /root/.config/matrix-backup/age.key}
"""

RETURN = r"""
set_id:
  description: Set written (backup), restored or verified (the last one for O(set=all)).
  returned: success, except prune
  type: str
  sample: 20260101T030000Z
path:
  description: Directory of the new set.
  returned: mode=backup, not in check mode
  type: str
stats:
  description:
    - Progress and sizes. For a backup, C(database) (bytes, stored_bytes, seconds, throughput_mb_s),
      C(media) (files_total, bytes_total, files_copied, bytes_copied, files_reused, seconds, throughput_mb_s),
      C(secrets) (counts) and C(total). For a restore, C(database), C(media) (files_restored, bytes_restored,
      files_skipped), C(secrets) (what changed) and C(total_seconds).
  returned: mode=backup or mode=restore, not in check mode
  type: dict
plan:
  description: What a check-mode backup would copy, or the steps of a restore.
  returned: mode=backup in check mode, mode=restore
  type: raw
ok:
  description: Whether verification found no problem.
  returned: mode=verify
  type: bool
problems:
  description: Problems found by verification (the module fails when there is any).
  returned: mode=verify, or when a restore fails verification
  type: list
  elements: str
sets:
  description: Per-set verification details (files and media checked, bytes, seconds, manifest summary).
  returned: mode=verify
  type: list
  elements: dict
manifest:
  description: Summary of the set's manifest (server name, versions, sizes, checksums, timestamps; no secrets).
  returned: mode=restore
  type: dict
postgresql:
  description:
    - For a restore with a database, the major the dump needs (C(dump_major)), the target's C(server_version)
      and the C(pg_restore_version) that restores it.
  returned: mode=restore with O(database.host) or O(database.pod)
  type: dict
kept:
  description: Sets kept by prune, with the rules that keep them.
  returned: mode=prune
  type: dict
deleted:
  description: Sets deleted (or that would be deleted in check mode) by prune.
  returned: mode=prune
  type: list
  elements: str
media_objects_deleted:
  description: Media objects no kept set references, deleted by prune.
  returned: mode=prune
  type: int
media_bytes_freed:
  description: Bytes freed by deleting those media objects.
  returned: mode=prune
  type: int
incomplete_removed:
  description: Leftovers of interrupted backups removed by prune.
  returned: mode=prune
  type: list
  elements: str
cleaned_incomplete:
  description: Leftovers of interrupted backups removed before this backup.
  returned: mode=backup, not in check mode
  type: list
  elements: str
encrypted:
  description: Whether the new set is encrypted.
  returned: mode=backup, not in check mode
  type: bool
incomplete_sets:
  description: Directories of unfinished sets present in the repository (never used).
  returned: mode=verify
  type: list
  elements: str
s3:
  description:
    - With O(s3). For a backup, what was copied (C(sets_pushed), C(objects_uploaded), C(bytes_uploaded),
      C(seconds)); for prune, the sets and objects deleted there; for verify and restore, what was downloaded
      (C(set_id), C(objects_downloaded), C(bytes_downloaded), C(already_local)).
  returned: when O(s3) is set
  type: dict
sets_before:
  description: Completed sets before the operation.
  returned: mode=backup or mode=prune
  type: list
  elements: str
sets_after:
  description: Completed sets after the operation (predicted in check mode).
  returned: mode=backup or mode=prune
  type: list
  elements: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import BackupError, Repository
from ansible_collections.matrix.stack.plugins.module_utils.backup import create, prune, restore, verify
from ansible_collections.matrix.stack.plugins.module_utils.backup.config import Config
from ansible_collections.matrix.stack.plugins.module_utils.backup import crypto
from ansible_collections.matrix.stack.plugins.module_utils.backup import media as media_mod
from ansible_collections.matrix.stack.plugins.module_utils.backup import pg as pg_mod
from ansible_collections.matrix.stack.plugins.module_utils.backup import s3 as s3_mod
from ansible_collections.matrix.stack.plugins.module_utils.backup import pg_clients
from ansible_collections.matrix.stack.plugins.module_utils.kube.client import build_api_client, kube_auth_argument_spec, require_kubernetes
from ansible_collections.matrix.stack.plugins.module_utils.kube.errors import KubeError, fail_kube


def argument_spec():
    spec = dict(
        mode=dict(type="str", choices=["backup", "restore", "verify", "prune"], default="backup"),
        dest=dict(type="path", required=True),
        set=dict(type="str", default="latest"),
        server_name=dict(type="str"),
        force=dict(type="bool", default=False),
        database=dict(type="dict", options=dict(
            name=dict(type="str", default="synapse"),
            host=dict(type="str"),
            port=dict(type="int", default=5432),
            user=dict(type="str", default="postgres"),
            password=dict(type="str", no_log=True),
            owner=dict(type="str"),
            pod=dict(type="str"),
            namespace=dict(type="str"),
            container=dict(type="str"),
            pg_bin_dir=dict(type="path"),
            pg_bin_search=dict(type="list", elements="str", default=list(pg_clients.DEFAULT_SEARCH)),
            jobs=dict(type="int", default=2),
            compress=dict(type="int"),
        ), mutually_exclusive=[["host", "pod"]], required_by={"pod": "namespace"}),
        media=dict(type="dict", options=dict(
            path=dict(type="str", required=True),
            pod=dict(type="str"),
            namespace=dict(type="str"),
            container=dict(type="str"),
            encrypt=dict(type="bool", default=False),
            rehash=dict(type="bool", default=False),
        ), required_by={"pod": "namespace"}),
        secrets=dict(type="dict", no_log=False, options=dict(
            namespace=dict(type="str"),
            label_selector=dict(type="str", default="matrix.stack/secret=true"),
            files=dict(type="list", elements="path", default=[]),
            allow_unencrypted=dict(type="bool", default=False),
        )),
        encryption=dict(type="dict", options=dict(
            recipients=dict(type="list", elements="str", default=[]),
            identities=dict(type="list", elements="str", default=[], no_log=True),
            identity_file=dict(type="path"),
        )),
        retention=dict(type="dict", options=dict(
            keep_last=dict(type="int", default=0),
            keep_daily=dict(type="int", default=0),
            keep_weekly=dict(type="int", default=0),
            keep_monthly=dict(type="int", default=0),
        )),
        synapse=dict(type="dict", options=dict(
            version=dict(type="str"),
            url=dict(type="str"),
            deployment=dict(type="str"),
            namespace=dict(type="str"),
            replicas=dict(type="int"),
            health_url=dict(type="str"),
            health_timeout=dict(type="int", default=300),
        ), required_by={"deployment": "namespace"}),
        verify_media=dict(type="str", choices=["checksum", "exists"], default="checksum"),
        s3=dict(type="dict", options=dict(
            bucket=dict(type="str", required=True),
            prefix=dict(type="str", default=""),
            endpoint_url=dict(type="str"),
            region=dict(type="str", default="us-east-1"),
            access_key=dict(type="str", no_log=True),
            secret_key=dict(type="str", no_log=True),
            ca_bundle=dict(type="path"),
            validate_certs=dict(type="bool", default=True),
        )),
        lock_timeout=dict(type="int", default=0),
        exec_timeout=dict(type="int", default=600),
    )
    spec.update(kube_auth_argument_spec())
    return spec


def build_config(module, p):
    """Translate module parameters into a backup Config (building Kubernetes clients only when needed)."""
    db, media, sec, enc, syn = (p.get(k) or {} for k in ("database", "media", "secrets", "encryption", "synapse"))
    need_kube = bool(db.get("pod") or media.get("pod") or sec.get("namespace") or syn.get("deployment"))
    api = None
    if need_kube:
        require_kubernetes(module)
        try:
            api = build_api_client(p)
        except KubeError as e:
            fail_kube(module, e)
    recipients, identities = [], []
    if enc.get("recipients") or enc.get("identities") or enc.get("identity_file") or media.get("encrypt"):
        if not crypto.HAS_PYRAGE:
            module.fail_json(msg=missing_required_lib("pyrage"), exception=str(crypto.PYRAGE_IMPORT_ERROR))
        recipients = crypto.parse_recipients(enc.get("recipients"))
        identities = crypto.parse_identities(enc.get("identities"), enc.get("identity_file"))
    if media.get("encrypt") and not recipients and p["mode"] == "backup":
        raise BackupError("media.encrypt needs encryption.recipients")
    pg = None
    if db.get("pod") or db.get("host"):
        if db.get("pod"):
            pg = pg_mod.PodPg(api, db["namespace"], db["pod"], db.get("container"), db["user"], db["name"],
                              owner=db.get("owner"), compress=db.get("compress"), timeout=p["exec_timeout"])
        else:
            pg = pg_mod.DirectPg(db["host"], db["port"], db["user"], db.get("password"), db["name"],
                                 db.get("pg_bin_dir"), owner=db.get("owner"), compress=db.get("compress"),
                                 search=db.get("pg_bin_search"))
    src = None
    if p.get("media"):
        if media.get("pod"):
            src = media_mod.PodMedia(api, media["namespace"], media["pod"], media.get("container"), media["path"],
                                     timeout=p["exec_timeout"])
        else:
            src = media_mod.LocalMedia(media["path"])
    s3 = None
    if p.get("s3"):
        if not s3_mod.HAS_BOTO3:
            module.fail_json(msg=missing_required_lib("boto3"))
        s3 = s3_mod.S3Copy(**p["s3"])
    clients = pg_clients.ClientFinder(db.get("pg_bin_dir"), db.get("pg_bin_search"))
    return Config(
        dest=p["dest"], server_name=p.get("server_name"), set_name=p["set"], pg=pg, pg_clients=clients,
        media=src, media_encrypt=bool(media.get("encrypt")), media_rehash=bool(media.get("rehash")),
        verify_media=p["verify_media"], recipients=recipients, recipient_strings=list(enc.get("recipients") or []),
        identities=identities, kube_api=api, secrets_namespace=sec.get("namespace"),
        secrets_selector=sec.get("label_selector"), secret_files=list(sec.get("files") or []),
        allow_unencrypted_secrets=bool(sec.get("allow_unencrypted")), synapse_version=syn.get("version"),
        synapse_url=syn.get("url"), synapse_deployment=syn.get("deployment"), synapse_namespace=syn.get("namespace"),
        synapse_replicas=syn.get("replicas"), health_url=syn.get("health_url"), health_timeout=syn.get("health_timeout") or 300,
        scale_timeout=syn.get("health_timeout") or 300, jobs=db.get("jobs") or 1, force=p["force"],
        keep=p.get("retention") or {}, check_mode=module.check_mode, lock_wait=p["lock_timeout"], s3=s3)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_if=[["mode", "prune", ["retention"]]])
    p = module.params
    mode = p["mode"]
    try:
        cfg = build_config(module, p)
        repo = Repository(cfg.dest)
        before = repo.list_sets() if repo.exists() else []
        if mode == "backup":
            result = create.backup(cfg)
            after = before + ([result["set_id"]] if result.get("set_id") else ["(new set)"] if module.check_mode else [])
        elif mode == "prune":
            result = prune.prune(cfg)
            after = [s for s in before if s not in result["deleted"]]
        elif mode == "verify":
            result = verify.verify(cfg)
            if not result["ok"]:
                module.fail_json(msg="backup verification failed: %s" % "; ".join(result["problems"][:10]), **result)
            module.exit_json(**result)
        else:
            result = restore.restore(cfg)
            module.exit_json(**result)
        result["sets_before"], result["sets_after"] = before, after
        if module._diff:
            result["diff"] = {"before": "\n".join(before) + "\n", "after": "\n".join(after) + "\n",
                              "before_header": "%s sets" % cfg.dest, "after_header": "%s sets" % cfg.dest}
        module.exit_json(**result)
    except BackupError as e:
        extra = {"problems": e.problems} if getattr(e, "problems", None) else {}
        module.fail_json(msg=str(e), **extra)
    except OSError as e:
        module.fail_json(msg="%s: %s%s" % (mode, e.strerror or e, (" (%s)" % e.filename) if getattr(e, "filename", None) else ""),
                         errno=e.errno, exception=traceback.format_exc())
    except Exception as e:  # pylint: disable=broad-except
        module.fail_json(msg="%s failed: %s: %s" % (mode, type(e).__name__, e), exception=traceback.format_exc())


if __name__ == "__main__":
    main()
