# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""mode=restore: verify the set, refuse what would lose data, then run an explicit list of steps.

``plan_restore`` (pure) turns what was found (the set, the target database, the media target, Kubernetes) into the
list of ``Step`` s; check mode returns their descriptions, a real run executes exactly that list, one step after
the other (``run_steps``), with no second look at the conditions that chose them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional

from ansible_collections.matrix.stack.plugins.module_utils.backup import crypto
from ansible_collections.matrix.stack.plugins.module_utils.backup import pg as pg_mod
from ansible_collections.matrix.stack.plugins.module_utils.backup import secrets as secrets_mod
from ansible_collections.matrix.stack.plugins.module_utils.backup.manifest import dump_major, load_manifest, public_manifest, rate
from ansible_collections.matrix.stack.plugins.module_utils.backup.pg_clients import major_of
from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import BackupError, Repository
from ansible_collections.matrix.stack.plugins.module_utils.backup.verify import on_pulled_set, verify_set


@dataclasses.dataclass(frozen=True)
class Step:
    """One restore step: ``action`` names what ``run_steps`` does, ``text`` is what check mode prints."""

    action: str
    text: str


@dataclasses.dataclass(frozen=True)
class Target:  # pylint: disable=too-many-instance-attributes
    """What a restore found before changing anything (the input of ``plan_restore``)."""

    media: Optional[str] = None               # description of the media target, None without one
    media_in_pod: bool = False                # the target is a pod: restored before scaling down (it mounts the volume)
    set_has_media: bool = False
    deployment: Optional[str] = None          # "namespace/name" of the Synapse Deployment scaled around the restore
    database: Optional[str] = None            # name of the target database, None without one
    database_state: str = "absent"            # absent | empty | non-empty
    dump_file: Optional[str] = None
    dump_major: Optional[int] = None
    pg_restore_version: Optional[str] = None
    server_version: Optional[str] = None
    kubernetes_secrets: tuple = ()            # "namespace/name" of the Secrets in the set (when a client is given)
    secret_files: tuple = ()
    health_url: Optional[str] = None


def plan_restore(target):
    """The steps of a restore, in the order they run."""
    steps = []
    media_first = bool(target.media and target.set_has_media and target.media_in_pod)
    media_last = bool(target.media and target.set_has_media and not target.media_in_pod)
    if media_first:
        steps.append(Step("media", "restore media into %s (additive; before scaling down, the pod mounts the volume)"
                          % target.media))
    if target.deployment:
        steps.append(Step("scale_down", "scale Deployment %s to 0" % target.deployment))
    if target.database:
        if target.database_state != "absent":
            steps.append(Step("drop_database", "drop database %s (%s)" % (target.database, target.database_state)))
        steps.append(Step("create_database", "create database %s (UTF8, C collation, template0)" % target.database))
        steps.append(Step("pg_restore", "pg_restore %s (PostgreSQL %s dump, pg_restore %s, server %s)"
                          % (target.dump_file, target.dump_major, target.pg_restore_version, target.server_version)))
        steps.append(Step("truncate_one_time_keys", "TRUNCATE e2e_one_time_keys_json"))
    if media_last:
        steps.append(Step("media", "restore media into %s" % target.media))
    if target.kubernetes_secrets:
        steps.append(Step("kubernetes_secrets", "restore Secrets %s" % ", ".join(target.kubernetes_secrets)))
    if target.secret_files:
        steps.append(Step("secret_files", "restore secret files %s" % ", ".join(target.secret_files)))
    if target.deployment:
        steps.append(Step("scale_up", "scale Deployment back up"))
    if target.health_url:
        steps.append(Step("wait_healthy", "wait for %s" % target.health_url))
    return steps


# ----- what is found before anything changes -----------------------------------------------------

def check_restore_major(pg, manifest, set_id):
    """Refuse, before anything is changed, a dump of a newer major than the target server or its pg_restore."""
    need = dump_major(manifest)
    server = pg.server_version()
    facts = {"dump_major": need, "server_version": server}
    if need is None:
        return facts
    if major_of(server) < need:
        raise BackupError("set %s holds a dump of PostgreSQL %d (source server %s), but the target %s runs PostgreSQL "
                          "%s: a dump restores only into a server of the same or a newer major. Nothing was changed. "
                          "Restore it into a PostgreSQL %d (or newer) server; see docs/upgrading.md"
                          % (set_id, need, (manifest.get("postgresql") or {}).get("server_version"), pg.describe(),
                             server, need))
    facts["pg_restore_version"] = pg.client_version("pg_restore")
    if (major_of(facts["pg_restore_version"]) or 0) < need:
        raise BackupError("set %s holds a dump of PostgreSQL %d, but the pg_restore that would restore it into %s is "
                          "version %s and cannot read it. Nothing was changed."
                          % (set_id, need, pg.describe(), facts["pg_restore_version"]))
    return facts


def _db_state(pg):
    _rc, out = pg.psql("SELECT 1 FROM pg_database WHERE datname = '%s'" % pg.dbname.replace("'", ""))
    if out.strip() != "1":
        return "absent", 0
    _rc, n = pg.psql(pg_mod.EMPTY_SQL, dbname=pg.dbname)
    n = int(n or 0)
    return ("empty" if n == 0 else "non-empty"), n


def _check_set(cfg, repo, set_id, marker):
    """Verify the set and its server name; returns (manifest, verify details)."""
    if marker.get("encrypted") and not cfg.identities:
        raise BackupError("set %s is encrypted: an age identity is required to restore it" % set_id)
    problems, details = verify_set(cfg, repo, set_id)
    if problems:
        err = BackupError("set %s failed verification, nothing was restored: %s" % (set_id, "; ".join(problems[:10])))
        err.problems = problems
        raise err
    manifest = load_manifest(repo, set_id, cfg.identities)
    if cfg.server_name and manifest.get("server_name") != cfg.server_name and not cfg.force:
        raise BackupError("set %s is for server %r, not %r (use force to override)"
                          % (set_id, manifest.get("server_name"), cfg.server_name))
    if not cfg.server_name and not cfg.force:
        raise BackupError("server_name of the target is required for a restore (or force)")
    return manifest, details


def find_target(cfg, manifest, set_id):
    """The ``Target`` of this restore (reads the database server; refuses a non-empty database without force)."""
    fields = {}
    pg_facts = None
    if cfg.pg is not None:
        pg_facts = check_restore_major(cfg.pg, manifest, set_id)
        state, ntables = _db_state(cfg.pg)
        if state == "non-empty" and not cfg.force:
            raise BackupError("database %s is not empty (%d tables): refusing to restore over it without force"
                              % (cfg.pg.dbname, ntables))
        fields.update(database=cfg.pg.dbname, database_state=state, dump_file=manifest["database"]["file"],
                      dump_major=pg_facts["dump_major"], pg_restore_version=pg_facts.get("pg_restore_version"),
                      server_version=pg_facts["server_version"])
    if cfg.media is not None:
        fields.update(media=cfg.media.describe(), media_in_pod=cfg.media.kind == "pod")
    sec = manifest.get("secrets") or {}
    if sec.get("kubernetes") and cfg.kube_api is not None:
        fields["kubernetes_secrets"] = tuple(sec["kubernetes"])
    fields.update(set_has_media=bool(manifest.get("media")), secret_files=tuple(sec.get("files") or ()),
                  deployment="%s/%s" % (cfg.synapse_namespace, cfg.synapse_deployment) if cfg.scales_synapse else None,
                  health_url=cfg.health_url)
    return Target(**fields), pg_facts


# ----- running the steps ---------------------------------------------------------------------------

class _Run:
    """The state the steps share during one real restore (the set, the stats, the replicas to scale back to)."""

    def __init__(self, cfg, repo, set_id, marker, manifest):
        self.cfg, self.repo, self.set_id, self.marker, self.manifest = cfg, repo, set_id, marker, manifest
        self.stats = {"media": {"files_restored": 0, "bytes_restored": 0, "files_skipped": 0}}
        if manifest.get("secrets"):
            self.stats["secrets"] = {"kubernetes": [], "files": []}
        self.replicas = None
        self.db_started = None
        self._bundle = None

    def set_file(self, name):
        return os.path.join(self.repo.set_path(self.set_id), name)

    def secrets_bundle(self):
        """The set's secrets, decrypted once for the steps that restore them."""
        if self._bundle is None:
            sec = self.manifest["secrets"]
            with open(self.set_file(sec["file"]), "rb") as f:
                raw = f.read()
            raw = crypto.decrypt_bytes(raw, self.cfg.identities, what="secrets") if sec.get("encrypted") else raw
            self._bundle = json.loads(raw)
        return self._bundle

    def forget_secrets(self):
        self._bundle = None

    # one method a step action

    def media(self):
        t0 = time.monotonic()
        index = [(rel, size, sha, self.repo.object_path(sha))
                 for rel, size, sha, _st in self.repo.read_media_index(self.set_id)]
        stats = self.stats["media"]
        self.cfg.media.restore(index, self.cfg.identities, bool(self.marker.get("media_encrypted")), stats)
        stats["seconds"] = round(time.monotonic() - t0, 3)
        stats["throughput_mb_s"] = rate(stats["bytes_restored"], stats["seconds"])

    def scale_down(self):
        cfg = self.cfg
        self.replicas = cfg.synapse_replicas if cfg.synapse_replicas is not None else (_current_replicas(cfg) or 1)
        _scale(cfg, 0, wait_gone=True)

    def drop_database(self):
        self.db_started = time.monotonic()
        self.cfg.pg.psql("DROP DATABASE %s WITH (FORCE)" % pg_mod.quote_ident(self.cfg.pg.dbname))

    def create_database(self):
        self.db_started = self.db_started or time.monotonic()
        self.cfg.pg.psql(pg_mod.create_db_sql(self.cfg.pg.dbname, self.cfg.pg.owner))

    def pg_restore(self):
        pg, db = self.cfg.pg, self.manifest["database"]
        path = self.set_file(db["file"])
        if self.marker.get("encrypted"):
            def feed(pipe):
                with open(path, "rb") as f:
                    crypto.decrypt_stream(f, pipe, self.cfg.identities, what="database dump")
            jobs = 1
            pg.restore(db["size"], reader=feed, jobs=jobs)
        else:
            jobs = self.cfg.jobs if pg.kind == "direct" else 1
            pg.restore(db["size"], path=path, jobs=jobs)
        self.stats["database"] = {"bytes": db["size"], "jobs": jobs}

    def truncate_one_time_keys(self):
        self.cfg.pg.psql("TRUNCATE e2e_one_time_keys_json", dbname=self.cfg.pg.dbname)
        seconds = time.monotonic() - self.db_started
        db = self.stats["database"]
        db.update(seconds=round(seconds, 3), throughput_mb_s=rate(db["bytes"], seconds))

    def kubernetes_secrets(self):
        bundle = self.secrets_bundle()
        if bundle.get("kubernetes"):
            self.stats["secrets"]["kubernetes"] = secrets_mod.restore_kubernetes(
                self.cfg.kube_api, bundle["kubernetes"], self.cfg.secrets_namespace)

    def secret_files(self):
        bundle = self.secrets_bundle()
        if bundle.get("files"):
            self.stats["secrets"]["files"] = secrets_mod.restore_files(bundle["files"])

    def scale_up(self):
        _scale(self.cfg, self.replicas, wait_gone=False)
        self.stats["scaled_to"] = self.replicas

    def wait_healthy(self):
        self.stats["health_wait_seconds"] = wait_health(self.cfg.health_url, self.cfg.health_timeout)


def run_steps(steps, run):
    """Execute the steps in order (each ``Step.action`` is a method of ``run``)."""
    try:
        for step in steps:
            getattr(run, step.action)()
    finally:
        run.forget_secrets()
    return run.stats


def restore(cfg):
    return on_pulled_set(cfg, _restore_local, lambda pulled: {
        "changed": True, "plan": ["download set %s from %s" % (pulled["set_id"], pulled["source"]),
                                  "verify it, then restore (run without check mode once downloaded to see every step)"]})


def _restore_local(cfg):
    repo = Repository(cfg.dest)
    if not repo.exists():
        raise BackupError("%s is not a backup repository" % repo.root)
    t_start = time.monotonic()
    with repo.lock(exclusive=False, wait=cfg.lock_wait):
        set_id = repo.resolve_set(cfg.set_name)
        marker = repo.read_complete(set_id)
        manifest, vdetails = _check_set(cfg, repo, set_id, marker)
        target, pg_facts = find_target(cfg, manifest, set_id)
        steps = plan_restore(target)
        result = {"changed": True, "set_id": set_id, "plan": [step.text for step in steps],
                  "server_name": manifest.get("server_name"),
                  "verify": {"seconds": vdetails.get("seconds"), "bytes_checked": vdetails.get("bytes_checked")},
                  "manifest": public_manifest(manifest)}
        if pg_facts is not None:
            result["postgresql"] = pg_facts
        if cfg.check_mode:
            return result
        stats = run_steps(steps, _Run(cfg, repo, set_id, marker, manifest))
    stats["total_seconds"] = round(time.monotonic() - t_start, 3)
    result["stats"] = stats
    return result


# ----- Kubernetes and HTTP helpers of the steps ------------------------------------------------------

def _apps(cfg):
    from kubernetes import client
    return client.AppsV1Api(cfg.kube_api), client.CoreV1Api(cfg.kube_api)


def _scale(cfg, replicas, wait_gone):
    from kubernetes import client
    apps, core = _apps(cfg)
    name, ns = cfg.synapse_deployment, cfg.synapse_namespace
    try:
        dep = apps.read_namespaced_deployment(name, ns)
        apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": replicas}})
    except client.exceptions.ApiException as e:
        raise BackupError("cannot scale Deployment %s/%s: %s" % (ns, name, e.reason)) from e
    if wait_gone:
        sel = ",".join("%s=%s" % kv for kv in sorted((dep.spec.selector.match_labels or {}).items()))
        deadline = time.monotonic() + cfg.scale_timeout
        while time.monotonic() < deadline:
            pods = core.list_namespaced_pod(ns, label_selector=sel).items
            if not pods:
                return
            time.sleep(1)
        raise BackupError("Synapse pods of %s/%s still present after %ss" % (ns, name, cfg.scale_timeout))


def _current_replicas(cfg):
    apps, _core = _apps(cfg)
    dep = apps.read_namespaced_deployment(cfg.synapse_deployment, cfg.synapse_namespace)
    return dep.spec.replicas


def wait_health(url, timeout):
    from ansible.module_utils.urls import open_url
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with open_url(url, timeout=5, validate_certs=False) as r:
                if r.status == 200:
                    return round(timeout - (deadline - time.monotonic()), 1)
        except Exception as e:  # keep polling until the deadline
            last = e
        time.sleep(1)
    raise BackupError("Synapse did not become healthy at %s within %ss (%s)" % (url, timeout, last))
