# -*- coding: utf-8 -*-
# Copyright: (c) 2026, matrix.stack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes connection options of matrix.stack.apply (the modules use kubernetes.core.k8s_auth_options itself)."""


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    # Same option names, aliases and K8S_AUTH_* environment variables as kubernetes.core's k8s_auth_options, but for
    # impersonation, which the apply step's action plugin does not pass on yet; once it does, matrix.stack.apply
    # can extend kubernetes.core.k8s_auth_options like the other modules and this fragment goes.
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path to a kubeconfig file, or the kubeconfig content as a dictionary.
      - Several files can be given separated by V(:) (V(;) on Windows), as with E(KUBECONFIG).
      - When no connection option is set the module tries the in-cluster service account, then the
        default kubeconfig (E(KUBECONFIG) or C(~/.kube/config)).
      - Can also be specified via the E(K8S_AUTH_KUBECONFIG) environment variable.
    type: raw
  context:
    description:
      - The name of a context found in the kubeconfig file.
      - Can also be specified via the E(K8S_AUTH_CONTEXT) environment variable.
    type: str
  host:
    description:
      - URL of the Kubernetes API server, for example V(https://127.0.0.1:6443).
      - Overrides the server of the kubeconfig context.
      - Can also be specified via the E(K8S_AUTH_HOST) environment variable.
    type: str
  api_key:
    description:
      - Bearer token used to authenticate with the API.
      - Can also be specified via the E(K8S_AUTH_API_KEY) environment variable.
    type: str
  username:
    description:
      - Username for HTTP basic authentication (only for API servers configured to accept it).
      - Can also be specified via the E(K8S_AUTH_USERNAME) environment variable.
    type: str
  password:
    description:
      - Password for HTTP basic authentication, see O(username).
      - Can also be specified via the E(K8S_AUTH_PASSWORD) environment variable.
    type: str
  validate_certs:
    description:
      - Whether to verify the API server's TLS certificate.
      - Can also be specified via the E(K8S_AUTH_VERIFY_SSL) environment variable.
    type: bool
    aliases: [verify_ssl]
  ca_cert:
    description:
      - Path to a CA certificate (the full chain) used to verify the API server's certificate.
      - Can also be specified via the E(K8S_AUTH_SSL_CA_CERT) environment variable.
    type: path
    aliases: [ssl_ca_cert]
  client_cert:
    description:
      - Path to a client certificate used to authenticate with the API.
      - Can also be specified via the E(K8S_AUTH_CERT_FILE) environment variable.
    type: path
    aliases: [cert_file]
  client_key:
    description:
      - Path to the key of O(client_cert).
      - Can also be specified via the E(K8S_AUTH_KEY_FILE) environment variable.
    type: path
    aliases: [key_file]
  proxy:
    description:
      - URL of an HTTP proxy to reach the API server.
      - The usual E(HTTP_PROXY)/E(HTTPS_PROXY) variables are not used.
      - Can also be specified via the E(K8S_AUTH_PROXY) environment variable.
    type: str
  no_proxy:
    description:
      - Comma separated hosts, domains and CIDRs that bypass O(proxy).
      - Can also be specified via the E(K8S_AUTH_NO_PROXY) environment variable.
    type: str
  proxy_headers:
    description:
      - Headers sent to the HTTP proxy.
    type: dict
    suboptions:
      proxy_basic_auth:
        description:
          - Colon-separated C(username:password) for proxy basic authentication.
          - Can also be specified via the E(K8S_AUTH_PROXY_HEADERS_PROXY_BASIC_AUTH) environment variable.
        type: str
      basic_auth:
        description:
          - Colon-separated C(username:password) for basic authentication.
          - Can also be specified via the E(K8S_AUTH_PROXY_HEADERS_BASIC_AUTH) environment variable.
        type: str
      user_agent:
        description:
          - User agent sent to the proxy.
          - Can also be specified via the E(K8S_AUTH_PROXY_HEADERS_USER_AGENT) environment variable.
        type: str
  persist_config:
    description:
      - Whether the Kubernetes client may write refreshed tokens back into the kubeconfig file.
      - Can also be specified via the E(K8S_AUTH_PERSIST_CONFIG) environment variable.
    type: bool
notes:
  - The connection options match those of C(kubernetes.core) (names, aliases, E(K8S_AUTH_*) variables), so
    they can be set once for all matrix.stack modules with C(module_defaults) and C(group/matrix.stack.matrix).
  - Impersonation (C(impersonate_user), C(impersonate_groups)) is not supported.
requirements:
  - kubernetes (Python library)
"""
