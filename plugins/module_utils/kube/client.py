# -*- coding: utf-8 -*-
# Copyright: (c) 2026, matrix.stack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Kubernetes connection of the matrix.stack modules: kubernetes.core's options and client construction.

- ``kube_auth_argument_spec()``: kubernetes.core's connection options (``AUTH_ARG_SPEC``: names, aliases,
  ``K8S_AUTH_*`` environment variables, impersonation), documented by kubernetes.core's ``k8s_auth_options`` fragment.
- ``build_dynamic_client(params)``: kubernetes.core's dynamic client from its ``get_api_client`` (kubeconfig,
  context, in-cluster service account, token, certificates, proxy, impersonation headers); ``build_api_client(params)``
  its ``kubernetes.client.ApiClient``, usable for CoreV1Api calls, exec and port-forward. What kubernetes.core
  reports tersely (a missing kubeconfig or certificate file, an unreachable or untrusted API server, rejected
  credentials) becomes a ``KubeError`` an operator can act on.
- ``kube_call(...)``: one API call with the standard timeout, its errors translated (``kube.errors``).

Modules call ``require_kubernetes(module)`` first, build the client inside ``try: ... except KubeError as e:
fail_kube(module, e)``.
"""

import copy
import json
import os

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_MAP, AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException
from ansible_collections.matrix.stack.plugins.module_utils.kube.errors import KubeConfigError, KubeError, translate_error

try:
    import kubernetes
    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the environment
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = _exc

# Timeouts for every request (connect, read) in seconds.
REQUEST_TIMEOUT = (10, 60)

# option name -> the kubernetes client's name (both are accepted as K8S_AUTH_<NAME>, as by kubernetes.core)
_CLIENT_NAMES = {option: client for client, option in AUTH_ARG_MAP.items()}


def kube_auth_argument_spec():
    """kubernetes.core's connection options (a deep copy), to merge into a module's argument_spec."""
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec["client_key"]["no_log"] = False  # a path, not a secret
    return spec


def require_kubernetes(module):
    """Fail the module when the kubernetes Python client is missing."""
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)


def _option(params, option):
    """The option's value, else its K8S_AUTH_* variable (as kubernetes.core resolves it)."""
    value = params.get(option)
    if value is not None:
        return value
    for name in (option, _CLIENT_NAMES.get(option, option)):
        value = os.environ.get("K8S_AUTH_" + name.upper())
        if value:
            return value
    return None


def _check_files(params):
    """Refuse missing kubeconfig and certificate files with a message naming the option (never the path of the
    kubeconfig: a no_log option)."""
    kubeconfig = _option(params, "kubeconfig")
    if kubeconfig is not None and not isinstance(kubeconfig, (str, dict)):
        raise KubeConfigError("kubeconfig must be a path or a dictionary, got %s" % type(kubeconfig).__name__)
    if isinstance(kubeconfig, str):
        paths = [p for p in os.path.expanduser(kubeconfig).split(os.pathsep) if p]
        if paths and not any(os.path.exists(p) for p in paths):
            raise KubeConfigError("the kubeconfig file does not exist (option kubeconfig or K8S_AUTH_KUBECONFIG)")
    for option in ("ca_cert", "client_cert", "client_key"):
        path = _option(params, option)
        if path and not os.path.exists(os.path.expanduser(path)):
            raise KubeConfigError("%s file not found: %s" % (option, path))


def auth_options(params):
    """The connection options set in ``params``, by their kubernetes.core names (an alias counts for its option: the
    apply action plugin hands its arguments over as given)."""
    options = {}
    for name, spec in AUTH_ARG_SPEC.items():
        for key in [name] + list(spec.get("aliases") or []):
            if params.get(key) not in (None, "", []):
                options[name] = params[key]
                break
    return options


def build_dynamic_client(params):
    """kubernetes.core's dynamic client for the connection options in ``params`` (a module's params dict, or the
    apply step's arguments), built by its ``get_api_client`` (which reads the ``K8S_AUTH_*`` variables for options
    not given).

    Raises a KubeError (KubeConfigError, KubeUnreachableError, KubeTLSError, KubeUnauthorizedError, ...).
    """
    if not HAS_KUBERNETES:
        raise KubeConfigError(missing_required_lib("kubernetes"))
    options = auth_options(params)
    _check_files(options)
    if isinstance(options.get("kubeconfig"), str):
        options["kubeconfig"] = os.path.expanduser(options["kubeconfig"])
    # kubernetes.core starts from the kubernetes client's process-wide default configuration, into which it loads the
    # kubeconfig: a client built earlier in this process would lend its certificates to this one. Start blank.
    kubernetes.client.Configuration.set_default(None)
    try:
        dynamic = get_api_client(**options).client
    except CoreException as exc:
        raise KubeConfigError("could not load the Kubernetes configuration: %s" % (exc.__cause__ or exc)) from exc
    except KubeError:
        raise
    except (ValueError, TypeError, KeyError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise KubeConfigError("could not load the Kubernetes configuration: %s" % exc) from exc
    except Exception as exc:  # pylint: disable=broad-except
        raise translate_error(exc, "connect to", "the Kubernetes API", host=_option(params, "host")) from exc
    finally:
        kubernetes.client.Configuration.set_default(None)
    dynamic.client.user_agent = "matrix.stack/kubernetes-%s" % getattr(kubernetes, "__version__", "unknown")
    return dynamic


def build_api_client(params):
    """The ``kubernetes.client.ApiClient`` of ``build_dynamic_client(params)``, for CoreV1Api calls, exec and
    port-forward."""
    return build_dynamic_client(params).client


def api_host(api_client):
    try:
        return api_client.configuration.host
    except AttributeError:
        return None


def core_v1(api_client):
    return kubernetes.client.CoreV1Api(api_client)


def kube_call(api_client, func, *args, action="call", what="the Kubernetes API", namespace=None, **kwargs):
    """Call ``func(*args, **kwargs)`` with the standard timeout; raise a KubeError on failure."""
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    try:
        return func(*args, **kwargs)
    except Exception as exc:  # pylint: disable=broad-except
        raise translate_error(exc, action, what, namespace=namespace, host=api_host(api_client)) from exc


def json_response(response):
    """The decoded JSON of a response read with ``_preload_content=False``."""
    data = response.data
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    return json.loads(data) if data else {}
