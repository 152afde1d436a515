# -*- coding: utf-8 -*-
# Copyright: (c) 2026, matrix.stack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Secrets as plain dicts (the JSON the API server sends), with resourceVersion-guarded writes and server-side dry run."""

import base64

from ansible_collections.matrix.stack.plugins.module_utils.kube.client import core_v1, json_response, kube_call
from ansible_collections.matrix.stack.plugins.module_utils.kube.errors import KubeNotFoundError


def secret_what(namespace, name):
    return "Secret %s/%s" % (namespace, name)


def get_secret(api_client, namespace, name):
    """The Secret as a dict (``data`` values still base64), or None when it does not exist.

    A missing namespace also reads as "no Secret" here (the API answers the same 404); creating then reports it.
    """
    api = core_v1(api_client)
    try:
        response = kube_call(api_client, api.read_namespaced_secret, name, namespace, _preload_content=False,
                             action="read", what=secret_what(namespace, name), namespace=namespace)
    except KubeNotFoundError:
        return None
    return json_response(response)


def _dry_run(dry_run):
    return {"dry_run": "All"} if dry_run else {}


def create_secret(api_client, namespace, body, dry_run=False):
    """Create the Secret ``body`` (a dict); returns the stored object. Server-side dry run when ``dry_run``."""
    api = core_v1(api_client)
    name = body["metadata"]["name"]
    response = kube_call(api_client, api.create_namespaced_secret, namespace, body, _preload_content=False,
                         action="create", what=secret_what(namespace, name), namespace=namespace, **_dry_run(dry_run))
    return json_response(response)


def replace_secret(api_client, namespace, body, dry_run=False):
    """Replace the Secret with ``body``; ``body.metadata.resourceVersion`` must be the version read (the API
    answers 409 Conflict when the Secret changed in between, raised as KubeConflictError)."""
    api = core_v1(api_client)
    name = body["metadata"]["name"]
    if not body["metadata"].get("resourceVersion"):
        raise ValueError("replace_secret needs metadata.resourceVersion")
    response = kube_call(api_client, api.replace_namespaced_secret, name, namespace, body, _preload_content=False,
                         action="update", what=secret_what(namespace, name), namespace=namespace, **_dry_run(dry_run))
    return json_response(response)


def delete_secret(api_client, namespace, name, resource_version=None, uid=None, dry_run=False):
    """Delete the Secret, only if it still has ``resource_version`` / ``uid`` when given (409 otherwise)."""
    api = core_v1(api_client)
    preconditions = {}
    if resource_version:
        preconditions["resourceVersion"] = resource_version
    if uid:
        preconditions["uid"] = uid
    body = {"apiVersion": "v1", "kind": "DeleteOptions"}
    if preconditions:
        body["preconditions"] = preconditions
    if dry_run:
        # The API server ignores query parameters of a DELETE that has a DeleteOptions body: dryRun must be in
        # the body, or the "dry run" deletes for real.
        body["dryRun"] = ["All"]
    response = kube_call(api_client, api.delete_namespaced_secret, name, namespace, body=body, _preload_content=False,
                         action="delete", what=secret_what(namespace, name), namespace=namespace, **_dry_run(dry_run))
    return json_response(response)


def decode_secret_data(secret):
    """``{key: bytes}`` from a Secret dict (``data`` base64 decoded, ``stringData`` ignored: the API never
    returns it)."""
    data = (secret or {}).get("data") or {}
    return {key: base64.b64decode(value) for key, value in data.items()}


def encode_secret_data(values):
    """``{key: base64 str}`` for a Secret's ``data`` from ``{key: bytes}``."""
    return {key: base64.b64encode(value).decode("ascii") for key, value in values.items()}
