# -*- coding: utf-8 -*-
# Copyright: (c) 2026, matrix.stack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes plumbing shared by the matrix.stack modules (private module_utils).

- ``KUBE_AUTH_ARG_SPEC`` / ``kube_auth_argument_spec()``: the connection options documented by the
  ``matrix.stack.kube_auth`` doc fragment (same names, aliases and ``K8S_AUTH_*`` environment variables as
  kubernetes.core, so ``module_defaults`` and environments written for kubernetes.core work unchanged).
- ``build_api_client(params)``: a ``kubernetes.client.ApiClient`` with its own Configuration object (never the
  process-wide default), usable for CoreV1Api calls, ``kubernetes.stream`` exec and port-forward.
- ``kube_call(...)`` and ``translate_error(...)``: turn client exceptions into ``KubeError`` subclasses with
  messages an operator can act on (unreachable API, TLS, 401, 403/RBAC, missing namespace, conflicts, ...).
- Secret helpers working on plain dicts (the JSON the API server sends), with resourceVersion-guarded writes.

Modules call ``require_kubernetes(module)`` first, build the client inside ``try: ... except KubeError as e:
fail_kube(module, e)``.
"""

import base64
import copy
import json
import os
import ssl

from ansible.module_utils.basic import missing_required_lib


class _LibraryMissing(Exception):
    """Stands in for the client's exception classes when it is not installed (never raised)."""


try:
    import kubernetes
    from kubernetes.client.rest import ApiException
    from kubernetes.config.config_exception import ConfigException
    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the environment
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = _exc
    ApiException = ConfigException = _LibraryMissing

try:
    import urllib3
    import urllib3.exceptions
    HAS_URLLIB3 = True
except ImportError:  # pragma: no cover
    HAS_URLLIB3 = False


AUTH_PROXY_HEADERS_SPEC = dict(
    proxy_basic_auth=dict(type="str", no_log=True),
    basic_auth=dict(type="str", no_log=True),
    user_agent=dict(type="str"),
)

KUBE_AUTH_ARG_SPEC = dict(
    kubeconfig=dict(type="raw", no_log=True),
    context=dict(type="str"),
    host=dict(type="str"),
    api_key=dict(type="str", no_log=True),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    validate_certs=dict(type="bool", aliases=["verify_ssl"]),
    ca_cert=dict(type="path", aliases=["ssl_ca_cert"]),
    client_cert=dict(type="path", aliases=["cert_file"]),
    client_key=dict(type="path", aliases=["key_file"], no_log=False),  # a path, not a secret
    proxy=dict(type="str"),
    no_proxy=dict(type="str"),
    proxy_headers=dict(type="dict", options=AUTH_PROXY_HEADERS_SPEC),
    persist_config=dict(type="bool"),
)

# option name -> name used by the kubernetes client (also accepted as K8S_AUTH_<NAME>, like kubernetes.core)
_CLIENT_NAMES = {
    "kubeconfig": "kubeconfig",
    "context": "context",
    "host": "host",
    "api_key": "api_key",
    "username": "username",
    "password": "password",
    "validate_certs": "verify_ssl",
    "ca_cert": "ssl_ca_cert",
    "client_cert": "cert_file",
    "client_key": "key_file",
    "proxy": "proxy",
    "no_proxy": "no_proxy",
    "persist_config": "persist_config",
}

# Timeouts for every request (connect, read) in seconds.
REQUEST_TIMEOUT = (10, 60)


def kube_auth_argument_spec():
    """A deep copy of the connection options, to merge into a module's argument_spec."""
    return copy.deepcopy(KUBE_AUTH_ARG_SPEC)


# ----- errors ------------------------------------------------------------------------------------

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


def require_kubernetes(module):
    """Fail the module when the kubernetes Python client is missing."""
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)


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


def kube_call(api_client, func, *args, action="call", what="the Kubernetes API", namespace=None, **kwargs):
    """Call ``func(*args, **kwargs)`` with the standard timeout; raise a KubeError on failure."""
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    try:
        return func(*args, **kwargs)
    except Exception as exc:  # pylint: disable=broad-except
        raise translate_error(exc, action, what, namespace=namespace, host=api_host(api_client)) from exc


# ----- client construction -----------------------------------------------------------------------

def _env(option):
    for name in ("K8S_AUTH_" + option.upper(), "K8S_AUTH_" + _CLIENT_NAMES[option].upper()):
        value = os.environ.get(name)
        if value is not None and value != "":
            return value
    return None


def resolve_auth(params):
    """Option values with the K8S_AUTH_* environment fallbacks applied; keys are option names."""
    auth = {}
    for option in _CLIENT_NAMES:
        value = params.get(option)
        if value is None:
            value = _env(option)
            if value is not None and KUBE_AUTH_ARG_SPEC[option].get("type") == "bool":
                value = value.lower() not in ("0", "false", "no", "off")
            if value is not None and KUBE_AUTH_ARG_SPEC[option].get("type") == "path":
                value = os.path.expanduser(value)
        if value is not None:
            auth[option] = value
    headers = dict(params.get("proxy_headers") or {})
    for key in AUTH_PROXY_HEADERS_SPEC:
        if headers.get(key) is None:
            env_value = os.environ.get("K8S_AUTH_PROXY_HEADERS_%s" % key.upper())
            if env_value:
                headers[key] = env_value
    headers = {k: v for k, v in headers.items() if v is not None}
    if headers:
        auth["proxy_headers"] = headers
    return auth


def _load_kubeconfig(auth, configuration):
    kubeconfig = auth.get("kubeconfig")
    kwargs = dict(context=auth.get("context"), client_configuration=configuration,
                  persist_config=bool(auth.get("persist_config")))
    if isinstance(kubeconfig, dict):
        kubernetes.config.load_kube_config_from_dict(config_dict=kubeconfig, **kwargs)
    elif kubeconfig is None or isinstance(kubeconfig, str):
        if isinstance(kubeconfig, str):
            kubeconfig = os.path.expanduser(kubeconfig)
            missing = [p for p in kubeconfig.split(os.pathsep) if p and not os.path.exists(p)]
            if missing and len(missing) == len([p for p in kubeconfig.split(os.pathsep) if p]):
                # (the path itself is masked in output: kubeconfig is a no_log option)
                raise KubeConfigError("the kubeconfig file does not exist (option kubeconfig or K8S_AUTH_KUBECONFIG)")
        kubernetes.config.load_kube_config(config_file=kubeconfig, **kwargs)
    else:
        raise KubeConfigError("kubeconfig must be a path or a dictionary, got %s" % type(kubeconfig).__name__)


def build_configuration(params):
    """A fresh ``kubernetes.client.Configuration`` from the connection options (plus K8S_AUTH_* variables).

    Resolution order, as in kubernetes.core: explicit host with credentials; else kubeconfig/context; else the
    in-cluster service account; else the default kubeconfig (~/.kube/config or $KUBECONFIG).
    """
    auth = resolve_auth(params)
    if auth.get("host"):
        auth["host"] = auth["host"].rstrip("/")
    configuration = kubernetes.client.Configuration()

    def have(*names):
        return all(auth.get(name) for name in names)

    try:
        if have("host", "api_key") or have("host", "username", "password") or have("host", "client_cert", "client_key"):
            pass
        elif have("kubeconfig") or have("context"):
            _load_kubeconfig(auth, configuration)
        else:
            try:
                kubernetes.config.load_incluster_config(client_configuration=configuration)
            except ConfigException:
                _load_kubeconfig(auth, configuration)
    except KubeError:
        raise
    except ConfigException as exc:
        raise KubeConfigError("could not load the Kubernetes configuration: %s" % exc) from exc
    except (OSError, ValueError, TypeError) as exc:
        raise KubeConfigError("could not load the Kubernetes configuration: %s" % exc) from exc

    if auth.get("host"):
        configuration.host = auth["host"]
    if auth.get("api_key"):
        configuration.api_key = {"authorization": "Bearer %s" % auth["api_key"]}
    if auth.get("username"):
        configuration.username = auth["username"]
    if auth.get("password"):
        configuration.password = auth["password"]
    if "validate_certs" in auth:
        configuration.verify_ssl = bool(auth["validate_certs"])
    if auth.get("ca_cert"):
        configuration.ssl_ca_cert = auth["ca_cert"]
    if auth.get("client_cert"):
        configuration.cert_file = auth["client_cert"]
    if auth.get("client_key"):
        configuration.key_file = auth["client_key"]
    if auth.get("proxy"):
        configuration.proxy = auth["proxy"]
    if auth.get("no_proxy"):
        configuration.no_proxy = auth["no_proxy"]
    if auth.get("proxy_headers"):
        configuration.proxy_headers = urllib3.util.make_headers(**auth["proxy_headers"])
    for path_option in ("ca_cert", "client_cert", "client_key"):
        if auth.get(path_option) and not os.path.exists(auth[path_option]):
            raise KubeConfigError("%s file not found: %s" % (path_option, auth[path_option]))
    if not configuration.host:
        raise KubeConfigError("no Kubernetes API host configured (set host, kubeconfig or K8S_AUTH_* variables)")
    return configuration


def build_api_client(params):
    """A ``kubernetes.client.ApiClient`` for the connection options in ``params`` (a module's params dict).

    Raises KubeConfigError. The caller should ``close()`` it (or use it as a context manager).
    """
    if not HAS_KUBERNETES:
        raise KubeConfigError(missing_required_lib("kubernetes"))
    configuration = build_configuration(params)
    client = kubernetes.client.ApiClient(configuration=configuration)
    client.user_agent = "matrix.stack/kubernetes-%s" % getattr(kubernetes, "__version__", "unknown")
    return client


def api_host(api_client):
    try:
        return api_client.configuration.host
    except AttributeError:
        return None


def core_v1(api_client):
    return kubernetes.client.CoreV1Api(api_client)


# ----- reading and writing objects as plain dicts ------------------------------------------------

def _json_response(response):
    data = response.data
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    return json.loads(data) if data else {}


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
    return _json_response(response)


def _dry_run(dry_run):
    return {"dry_run": "All"} if dry_run else {}


def create_secret(api_client, namespace, body, dry_run=False):
    """Create the Secret ``body`` (a dict); returns the stored object. Server-side dry run when ``dry_run``."""
    api = core_v1(api_client)
    name = body["metadata"]["name"]
    response = kube_call(api_client, api.create_namespaced_secret, namespace, body, _preload_content=False,
                         action="create", what=secret_what(namespace, name), namespace=namespace, **_dry_run(dry_run))
    return _json_response(response)


def replace_secret(api_client, namespace, body, dry_run=False):
    """Replace the Secret with ``body``; ``body.metadata.resourceVersion`` must be the version read (the API
    answers 409 Conflict when the Secret changed in between, raised as KubeConflictError)."""
    api = core_v1(api_client)
    name = body["metadata"]["name"]
    if not body["metadata"].get("resourceVersion"):
        raise ValueError("replace_secret needs metadata.resourceVersion")
    response = kube_call(api_client, api.replace_namespaced_secret, name, namespace, body, _preload_content=False,
                         action="update", what=secret_what(namespace, name), namespace=namespace, **_dry_run(dry_run))
    return _json_response(response)


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
    return _json_response(response)


def decode_secret_data(secret):
    """``{key: bytes}`` from a Secret dict (``data`` base64 decoded, ``stringData`` ignored: the API never
    returns it)."""
    data = (secret or {}).get("data") or {}
    return {key: base64.b64decode(value) for key, value in data.items()}


def encode_secret_data(values):
    """``{key: base64 str}`` for a Secret's ``data`` from ``{key: bytes}``."""
    return {key: base64.b64encode(value).decode("ascii") for key, value in values.items()}
