# -*- coding: utf-8 -*-
# Copyright: (c) 2026, matrix.stack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes client exceptions as ``KubeError`` subclasses with messages an operator can act on (unreachable API, TLS,
401, 403/RBAC, missing namespace, conflicts, ...): the error translation of matrix.stack, kept on top of
kubernetes.core's connection code."""

import json
import ssl


class _LibraryMissing(Exception):
    """Stands in for the client's exception classes when it is not installed (never raised)."""


try:
    from kubernetes.client.rest import ApiException
    from kubernetes.config.config_exception import ConfigException
except ImportError:  # pragma: no cover - depends on the environment
    ApiException = ConfigException = _LibraryMissing

try:
    from kubernetes.dynamic.exceptions import DynamicApiError
except ImportError:  # pragma: no cover
    DynamicApiError = _LibraryMissing

try:
    import urllib3
    import urllib3.exceptions
    HAS_URLLIB3 = True
except ImportError:  # pragma: no cover
    HAS_URLLIB3 = False


class KubeError(Exception):
    """A Kubernetes call failed; ``str(err)`` is the operator-facing message."""

    kind = "error"

    def __init__(self, msg, status=None, reason=None):
        super().__init__(msg)
        self.msg = msg
        self.status = status
        self.reason = reason


class KubeConfigError(KubeError):
    kind = "config"


class KubeUnreachableError(KubeError):
    kind = "unreachable"


class KubeTLSError(KubeError):
    kind = "tls"


class KubeUnauthorizedError(KubeError):
    kind = "unauthorized"


class KubeForbiddenError(KubeError):
    kind = "forbidden"


class KubeNotFoundError(KubeError):
    kind = "not_found"


class KubeNamespaceNotFoundError(KubeNotFoundError):
    kind = "namespace_not_found"


class KubeConflictError(KubeError):
    kind = "conflict"


class KubeAlreadyExistsError(KubeConflictError):
    kind = "already_exists"


class KubeInvalidError(KubeError):
    kind = "invalid"


class KubeApiError(KubeError):
    kind = "api_error"


def fail_kube(module, err, **kwargs):
    """fail_json with the error message plus ``kube_error`` (the error kind) and ``status`` (HTTP status)."""
    module.fail_json(msg=str(err), kube_error=err.kind, status=err.status, **kwargs)


def _status_body(exc):
    try:
        body = json.loads(exc.body) if exc.body else {}
        return body if isinstance(body, dict) else {}
    except (TypeError, ValueError):
        return {}


def translate_error(exc, action, what, namespace=None, host=None):
    """Map an exception raised by the kubernetes client to a KubeError.

    ``action`` is a verb phrase ("read", "create", "exec into"), ``what`` the object ("Secret ns/name").
    Returns the KubeError (the caller raises it); unknown exceptions are returned as KubeApiError.
    """
    where = " at %s" % host if host else ""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, DynamicApiError):  # the dynamic client (kubernetes.core's discovery) wraps ApiException
        api_exc = ApiException(status=exc.status, reason=exc.reason)
        api_exc.body = exc.body
        exc = api_exc
    if isinstance(exc, ApiException):
        body = _status_body(exc)
        message = body.get("message") or exc.reason or ""
        details = body.get("details") or {}
        status = exc.status
        reason = body.get("reason") or exc.reason
        if status == 0 or status is None:
            return KubeUnreachableError("Kubernetes API%s unreachable while trying to %s %s: %s"
                                        % (where, action, what, message or exc), status=status, reason=reason)
        if status == 401:
            return KubeUnauthorizedError(
                "Kubernetes API%s rejected the credentials (401 Unauthorized) while trying to %s %s; check kubeconfig, "
                "context, api_key or client certificates" % (where, action, what), status=status, reason=reason)
        if status == 403:
            return KubeForbiddenError(
                "forbidden (403): not allowed to %s %s; the API server said: %s. Grant the needed RBAC verbs "
                "to this identity (a Role/RoleBinding in the namespace)" % (action, what, message),
                status=status, reason=reason)
        if status == 404:
            if details.get("kind") == "namespaces" or (namespace and message == 'namespaces "%s" not found' % namespace):
                missing = namespace or details.get("name")
                return KubeNamespaceNotFoundError(
                    "namespace %r does not exist (needed to %s %s); create it first" % (missing, action, what),
                    status=status, reason=reason)
            return KubeNotFoundError("not found (404) while trying to %s %s: %s" % (action, what, message),
                                     status=status, reason=reason)
        if status == 409:
            if reason == "AlreadyExists":
                return KubeAlreadyExistsError("%s already exists: %s" % (what, message), status=status, reason=reason)
            return KubeConflictError("conflict (409) while trying to %s %s: %s" % (action, what, message),
                                     status=status, reason=reason)
        if status == 422:
            return KubeInvalidError("the API server rejected the request to %s %s as invalid (422): %s"
                                    % (action, what, message), status=status, reason=reason)
        return KubeApiError("Kubernetes API error %s %s while trying to %s %s: %s"
                            % (status, exc.reason or "", action, what, message), status=status, reason=reason)
    if isinstance(exc, ConfigException):
        return KubeConfigError("invalid Kubernetes client configuration: %s" % exc)
    if isinstance(exc, ssl.SSLError) or (HAS_URLLIB3 and isinstance(exc, urllib3.exceptions.SSLError)) \
            or (HAS_URLLIB3 and isinstance(exc, urllib3.exceptions.MaxRetryError)
                and isinstance(exc.reason, (ssl.SSLError, urllib3.exceptions.SSLError))):
        reason = exc.reason if HAS_URLLIB3 and isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
        return KubeTLSError("TLS error talking to the Kubernetes API%s while trying to %s %s: %s; provide the cluster CA "
                            "with ca_cert (or in the kubeconfig)" % (where, action, what, reason))
    if HAS_URLLIB3 and isinstance(exc, urllib3.exceptions.MaxRetryError):
        return KubeUnreachableError("Kubernetes API%s unreachable while trying to %s %s: %s"
                                    % (where, action, what, _short_reason(exc.reason)))
    if (HAS_URLLIB3 and isinstance(exc, urllib3.exceptions.HTTPError)) or isinstance(exc, OSError):
        return KubeUnreachableError("Kubernetes API%s unreachable while trying to %s %s: %s"
                                    % (where, action, what, _short_reason(exc)))
    return KubeApiError("unexpected error while trying to %s %s: %s: %s" % (action, what, type(exc).__name__, exc))


def _short_reason(reason):
    text = str(reason)
    # urllib3 wraps the interesting part: "<...HTTPSConnection object at 0x..>: Failed to establish ... refused"
    if ">: " in text:
        text = text.split(">: ", 1)[1]
    return text.rstrip(")")
