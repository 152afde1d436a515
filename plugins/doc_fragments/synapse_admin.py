# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options shared by matrix.stack.matrix_user and matrix.stack.matrix_user_info."""


class ModuleDocFragment(object):  # pylint: disable=too-few-public-methods

    DOCUMENTATION = r"""
options:
  homeserver_url:
    description:
      - Base URL of the Synapse B(main) process, for example V(http://synapse-main.matrix.svc:8008).
      - The Admin API must never be exposed on a public ingress; from outside the cluster use the
        O(kube_namespace) options, which reach the main process through a Kubernetes port-forward.
      - Required unless O(kube_namespace) is set; ignored when it is.
    type: str
  admin_token:
    description:
      - Access token of a Synapse server admin.
      - When O(registration_shared_secret) is also given and Synapse rejects this token (HTTP 401), a new
        token is bootstrapped with the shared secret (M(matrix.stack.matrix_user) only).
    type: str
  registration_shared_secret:
    description:
      - Synapse's C(registration_shared_secret), used when O(admin_token) is not given (or is rejected), to
        bootstrap an admin through shared-secret registration (nonce + HMAC-SHA1).
      - If the user does not exist it is registered (as an admin) and the returned access token is used;
        if it exists, the module logs in with its password instead (the login API is rate limited, so
        store and reuse the token, see O(matrix.stack.matrix_user#module:return_access_token)).
      - Shared-secret registration is disabled on servers that delegate authentication to Matrix
        Authentication Service (MAS).
    type: str
  server_name:
    description:
      - The homeserver's C(server_name) (the part after the colon in user IDs).
      - Discovered from the access token (C(whoami)) or from the server's key endpoint when not given.
    type: str
  timeout:
    description: Timeout of each HTTP request, in seconds.
    type: float
    default: 30
  retries:
    description:
      - How many times a request is retried after HTTP 429 (waiting for C(retry_after_ms) or
        C(Retry-After)), HTTP 502/503/504 or a connection error (exponential backoff from 0.5 s up to 10 s).
    type: int
    default: 5
  max_retry_wait:
    description: Longest wait accepted for one HTTP 429 before failing, in seconds.
    type: float
    default: 120
  validate_certs:
    description: Verify the homeserver's TLS certificate (https URLs only).
    type: bool
    default: true
  ca_path:
    description: PEM file with the CA certificates used to verify the homeserver's TLS certificate.
    type: path
  kube_namespace:
    description:
      - Reach the Synapse main process through a Kubernetes port-forward in this namespace instead of
        O(homeserver_url), so the Admin API never needs to be exposed.
      - The module opens a loopback listener on the Ansible target, forwards each connection through the
        Kubernetes API (C(pods/portforward)) to a ready pod, and closes it when the module ends.
      - Needs one of O(kube_service) or O(kube_pod_selector).
    type: str
  kube_service:
    description:
      - Service in O(kube_namespace) whose selector picks the Synapse main pod; its C(targetPort)
        for O(kube_port) gives the container port.
    type: str
  kube_pod_selector:
    description: Label selector of the Synapse main pod in O(kube_namespace), for example V(app.kubernetes.io/component=synapse-main).
    type: str
  kube_port:
    description:
      - With O(kube_service), the Service port; with O(kube_pod_selector), the container port.
    type: int
    default: 8008
  kubeconfig:
    description:
      - Path to a kubeconfig file (or its content as a dictionary) for the port-forward.
      - When no Kubernetes connection option is set, the in-cluster service account is tried, then the
        default kubeconfig (E(KUBECONFIG) or C(~/.kube/config)).
      - Can also be specified via the E(K8S_AUTH_KUBECONFIG) environment variable.
    type: raw
  context:
    description:
      - Kubeconfig context for the port-forward. Can also be specified via E(K8S_AUTH_CONTEXT).
    type: str
  kube_host:
    description:
      - URL of the Kubernetes API server (C(host) of C(kubernetes.core), renamed here so it cannot be
        mistaken for the homeserver). Can also be specified via E(K8S_AUTH_HOST).
    type: str
    aliases: [host]
  kube_api_key:
    description: Bearer token for the Kubernetes API server. Can also be specified via E(K8S_AUTH_API_KEY).
    type: str
    aliases: [api_key]
  kube_validate_certs:
    description:
      - Verify the Kubernetes API server's TLS certificate (O(validate_certs) is the homeserver's).
        Can also be specified via E(K8S_AUTH_VERIFY_SSL).
    type: bool
    aliases: [verify_ssl]
  kube_ca_cert:
    description: CA certificate of the Kubernetes API server. Can also be specified via E(K8S_AUTH_SSL_CA_CERT).
    type: path
    aliases: [ca_cert, ssl_ca_cert]
  kube_client_cert:
    description: Client certificate for the Kubernetes API server. Can also be specified via E(K8S_AUTH_CERT_FILE).
    type: path
    aliases: [client_cert, cert_file]
  kube_client_key:
    description: Key of O(kube_client_cert). Can also be specified via E(K8S_AUTH_KEY_FILE).
    type: path
    aliases: [client_key, key_file]
  kube_proxy:
    description: HTTP proxy for the Kubernetes API server. Can also be specified via E(K8S_AUTH_PROXY).
    type: str
    aliases: [proxy]
notes:
  - Write calls of the Synapse Admin API must reach the main process; workers only serve some GETs.
  - All requests of one task share one persistent HTTP connection.
  - The Kubernetes options carry a C(kube_) prefix so they cannot be mistaken for the homeserver's; the
    C(kubernetes.core) names are accepted as aliases (C(host), C(api_key), C(ca_cert), C(client_cert),
    C(client_key), C(proxy), C(verify_ssl)), so C(module_defaults) for C(group/matrix.stack.matrix) configure
    the port-forward too. Two names cannot be shared and mean something else here - C(validate_certs) is the
    B(homeserver's) TLS verification (use C(verify_ssl) or O(kube_validate_certs) for the API server), and
    C(password) is the Matrix user's password (HTTP basic authentication to the API server is not offered).
    Do not put either in group C(module_defaults).
requirements:
  - The C(kubernetes) Python library, only when the O(kube_namespace) options are used.
"""
