# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The I/O of the one apply step: one Kubernetes client, from kubernetes.core's connection code.

The connection options (kubeconfig, context, host, api_key, impersonation, proxies, the K8S_AUTH_* variables)
are those of kubernetes.core; the client is built by ``module_utils/kube/client.build_dynamic_client`` (its
``get_api_client``, as for the modules) and errors are translated into the messages of ``module_utils/kube/``.
Requests go through the client's dynamic request helper, returning plain dicts.
Discovery asks only for the group-versions the stack uses (one request each, cached for the run).
"""

import json
import threading
import time

from ansible_collections.matrix.stack.plugins.module_utils.kube.client import REQUEST_TIMEOUT, build_dynamic_client
from ansible_collections.matrix.stack.plugins.module_utils.kube.errors import KubeError, KubeNotFoundError, translate_error


def _plain(_client, data):
    return data


class Kube:
    """One API client for the whole step (thread-safe for requests: the pool is shared)."""

    def __init__(self, auth, field_manager, dry_run):
        self.dynamic = build_dynamic_client(auth)
        self.api_client = self.dynamic.client
        self.field_manager = field_manager
        self.dry_run = dry_run
        self._groups = {}
        self._lock = threading.Lock()

    @property
    def host(self):
        return self.api_client.configuration.host

    # ----- plumbing --------------------------------------------------------------------------------

    def request(self, method, path, action, what, namespace=None, **params):
        params.setdefault("_request_timeout", REQUEST_TIMEOUT)
        try:
            return self.dynamic.request(method, path, serializer=_plain, **params)
        except Exception as exc:  # pylint: disable=broad-except  # translate_error unwraps the dynamic client's errors
            raise translate_error(exc, action, what, namespace=namespace, host=self.host) from exc

    def resources(self, api_version):
        """{kind: {"name": plural, "namespaced": bool}} served for ``api_version``; {} when not served."""
        with self._lock:
            if api_version in self._groups:
                return self._groups[api_version]
        path = "/api/v1" if api_version == "v1" else "/apis/%s" % api_version
        try:
            listing = self.request("get", path, "discover", "API %s" % api_version)
            found = {item["kind"]: {"name": item["name"], "namespaced": item["namespaced"]}
                     for item in listing.get("resources", []) if "/" not in item["name"]}
        except KubeNotFoundError:
            found = {}
        with self._lock:
            self._groups[api_version] = found
        return found

    def path(self, api_version, kind, namespace, name=None):
        resource = self.resources(api_version).get(kind)
        if resource is None:
            raise KubeError("the API server does not serve %s %s (install its CustomResourceDefinition first, or "
                            "disable what renders it)" % (api_version, kind))
        base = "/api/v1" if api_version == "v1" else "/apis/%s" % api_version
        if resource["namespaced"]:
            base += "/namespaces/%s" % namespace
        base += "/" + resource["name"]
        return base + ("/" + name if name else "")

    @staticmethod
    def _what(obj, namespace):
        name = obj["metadata"]["name"]
        return "%s %s" % (obj["kind"], name if obj["kind"] == "Namespace" else "%s/%s" % (namespace, name))

    def _dry(self):
        return {"dry_run": "All"} if self.dry_run else {}

    # ----- verbs -----------------------------------------------------------------------------------

    def get(self, obj, namespace):
        try:
            return self.request("get", self.path(obj["apiVersion"], obj["kind"], namespace, obj["metadata"]["name"]),
                                "read", self._what(obj, namespace), namespace=namespace)
        except KubeNotFoundError:
            return None

    def list(self, api_version, kind, namespace, selector):
        """Objects of ``kind`` in ``namespace`` matching ``selector``, with apiVersion/kind set; [] when the kind is
        not served."""
        if kind not in self.resources(api_version):
            return []
        try:
            listing = self.request("get", self.path(api_version, kind, namespace), "list",
                                   "%s in namespace %s" % (kind, namespace), namespace=namespace,
                                   label_selector=selector)
        except KubeNotFoundError:
            return []
        items = listing.get("items") or []
        for item in items:
            item["apiVersion"], item["kind"] = api_version, kind
        return items

    def apply(self, obj, namespace):
        """Server-side apply with the stable field manager, forcing conflicts (the stack owns its fields)."""
        path = self.path(obj["apiVersion"], obj["kind"], namespace, obj["metadata"]["name"])
        return self.request("patch", path, "apply", self._what(obj, namespace), namespace=namespace,
                            body=obj, content_type="application/apply-patch+yaml",
                            field_manager=self.field_manager, force_conflicts=True, **self._dry())

    def delete(self, obj, namespace):
        path = self.path(obj["apiVersion"], obj["kind"], namespace, obj["metadata"]["name"])
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background",
                "preconditions": {"uid": obj["metadata"].get("uid")}}
        if self.dry_run:
            body["dryRun"] = ["All"]  # a DELETE with a body ignores the dryRun query parameter
        try:
            self.request("delete", path, "delete", self._what(obj, namespace), namespace=namespace, body=body,
                         **self._dry())
        except KubeNotFoundError:
            pass

    def wait_ready(self, api_version, kind, namespace, names, ready, selector, timeout):
        """Watch ``kind`` in ``namespace`` until every object in ``names`` satisfies ``ready``; returns the names
        still not ready at ``timeout`` (seconds)."""
        deadline = time.monotonic() + timeout
        pending = set(names)
        listing = self.request("get", self.path(api_version, kind, namespace), "list",
                               "%s in namespace %s" % (kind, namespace), namespace=namespace, label_selector=selector)
        for item in listing.get("items") or []:
            item["kind"] = kind
            if item["metadata"]["name"] in pending and ready(item):
                pending.discard(item["metadata"]["name"])
        version = listing["metadata"].get("resourceVersion")
        while pending and time.monotonic() < deadline:
            remaining = max(1, int(deadline - time.monotonic()))
            response = self.request("get", self.path(api_version, kind, namespace), "watch",
                                    "%s in namespace %s" % (kind, namespace), namespace=namespace,
                                    label_selector=selector, watch=True, resource_version=version,
                                    timeout_seconds=remaining, serialize=False,
                                    _request_timeout=(REQUEST_TIMEOUT[0], remaining + 10))
            try:
                for event in _events(response):
                    if event.get("type") == "ERROR":
                        version = None  # expired: start from the current state
                        break
                    item = event.get("object") or {}
                    version = (item.get("metadata") or {}).get("resourceVersion", version)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        item["kind"] = kind
                        if item["metadata"]["name"] in pending and ready(item):
                            pending.discard(item["metadata"]["name"])
                    if not pending or time.monotonic() >= deadline:
                        break
            finally:
                response.release_conn()
        return sorted(pending)

    def wait_gone(self, objects, namespace, timeout, interval=0.5):
        """Poll until none of ``objects`` exists any more (by uid: a new object of the same name does not count);
        returns the ``Kind/name`` labels still present at ``timeout`` (seconds)."""
        deadline = time.monotonic() + timeout
        pending = {(obj["apiVersion"], obj["kind"]): set() for obj in objects}
        for obj in objects:
            pending[(obj["apiVersion"], obj["kind"])].add(obj["metadata"].get("uid"))
        while True:
            for (api_version, kind), uids in list(pending.items()):
                # A cluster-scoped kind (the Namespace of a purge) is listed cluster-wide.
                uids &= {item["metadata"].get("uid") for item in self.list(api_version, kind, namespace, None)}
                if not uids:
                    del pending[(api_version, kind)]
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(interval)
        still = {uid for uids in pending.values() for uid in uids}
        return sorted("%s/%s" % (obj["kind"], obj["metadata"]["name"]) for obj in objects
                      if obj["metadata"].get("uid") in still)


def _events(response):
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)
