# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Secrets in a backup set: Kubernetes Secrets (those managed by matrix_secret) and secret files.

The bundle is a JSON document ``{"kubernetes": [...], "files": [...]}``; it is encrypted with age
when recipients are configured, otherwise written with mode 0600 (only when explicitly allowed).
Values never appear in module results.
"""

from __future__ import annotations

import base64
import os

from ansible_collections.matrix.stack.plugins.module_utils.backup.repo import BackupError
from ansible_collections.matrix.stack.plugins.module_utils.common.files import atomic_write

DROP_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def collect_kubernetes(api_client, namespace, label_selector):
    from kubernetes import client
    api = client.CoreV1Api(api_client)
    try:
        items = api.list_namespaced_secret(namespace, label_selector=label_selector).items
    except client.exceptions.ApiException as e:
        raise BackupError("cannot list Secrets in %s (%s): %s" % (namespace, label_selector, e.reason)) from e
    out = []
    for s in sorted(items, key=lambda x: x.metadata.name):
        out.append({
            "name": s.metadata.name,
            "namespace": namespace,
            "type": s.type or "Opaque",
            "labels": dict(s.metadata.labels or {}),
            "annotations": {k: v for k, v in (s.metadata.annotations or {}).items() if k not in DROP_ANNOTATIONS},
            "data": dict(s.data or {}),
            "immutable": bool(s.immutable),
        })
    return out


def collect_files(paths):
    out = []
    for p in paths or []:
        try:
            with open(p, "rb") as f:
                content = f.read()
            st = os.stat(p)
        except OSError as e:
            raise BackupError("cannot read secret file %s: %s" % (p, e.strerror)) from e
        out.append({"path": os.path.abspath(p), "mode": st.st_mode & 0o777, "uid": st.st_uid, "gid": st.st_gid,
                    "content": base64.b64encode(content).decode("ascii")})
    return out


def restore_kubernetes(api_client, secrets, namespace=None, check_mode=False):
    """Create or replace each Secret. Returns the list of names changed."""
    from kubernetes import client
    api = client.CoreV1Api(api_client)
    changed = []
    for s in secrets:
        ns = namespace or s["namespace"]
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=s["name"], namespace=ns, labels=s.get("labels") or None,
                                         annotations=s.get("annotations") or None),
            type=s.get("type") or "Opaque", data=s.get("data") or {}, immutable=s.get("immutable") or None)
        try:
            cur = api.read_namespaced_secret(s["name"], ns)
        except client.exceptions.ApiException as e:
            if e.status != 404:
                raise BackupError("cannot read Secret %s/%s: %s" % (ns, s["name"], e.reason)) from e
            cur = None
        if cur is not None and (cur.data or {}) == (s.get("data") or {}) and (cur.type or "Opaque") == body.type:
            continue
        changed.append("%s/%s" % (ns, s["name"]))
        if check_mode:
            continue
        try:
            if cur is None:
                api.create_namespaced_secret(ns, body)
            elif cur.immutable:
                api.delete_namespaced_secret(s["name"], ns)
                api.create_namespaced_secret(ns, body)
            else:
                body.metadata.resource_version = cur.metadata.resource_version
                api.replace_namespaced_secret(s["name"], ns, body)
        except client.exceptions.ApiException as e:
            raise BackupError("cannot restore Secret %s/%s: %s" % (ns, s["name"], e.reason)) from e
    return changed


def restore_files(files, check_mode=False):
    changed = []
    for f in files:
        path = f["path"]
        content = base64.b64decode(f["content"])
        try:
            with open(path, "rb") as cur:
                if cur.read() == content:
                    continue
        except OSError:
            pass
        changed.append(path)
        if check_mode:
            continue
        d = os.path.dirname(path)
        os.makedirs(d, exist_ok=True)
        owner = (f["uid"], f["gid"]) if os.geteuid() == 0 and "uid" in f else None
        with atomic_write(path, mode=(f.get("mode", 0o600) & 0o700) or 0o600, owner=owner, prefix=".restore-") as out:
            out.write(content)
    return changed
