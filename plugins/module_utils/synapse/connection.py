# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module plumbing shared by matrix_user and matrix_user_info: the connection options, the client (through a
Kubernetes port-forward when asked), the server name."""

from ansible_collections.matrix.stack.plugins.module_utils.synapse.endpoints import SynapseAdminClient
from ansible_collections.matrix.stack.plugins.module_utils.synapse.ids import validate_server_name
from ansible_collections.matrix.stack.plugins.module_utils.synapse.transport import SynapseAdminError


def connection_argument_spec():
    """Argument spec matching doc_fragments/synapse_admin.py."""
    return dict(
        homeserver_url=dict(type="str"),
        admin_token=dict(type="str", no_log=True),
        registration_shared_secret=dict(type="str", no_log=True),
        server_name=dict(type="str"),
        timeout=dict(type="float", default=30),
        retries=dict(type="int", default=5),
        max_retry_wait=dict(type="float", default=120),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        kube_namespace=dict(type="str"),
        kube_service=dict(type="str"),
        kube_pod_selector=dict(type="str"),
        kube_port=dict(type="int", default=8008),
        kubeconfig=dict(type="raw", no_log=True),
        context=dict(type="str"),
        kube_host=dict(type="str", aliases=["host"]),
        kube_api_key=dict(type="str", no_log=True, aliases=["api_key"]),
        kube_validate_certs=dict(type="bool", aliases=["verify_ssl"]),
        kube_ca_cert=dict(type="path", aliases=["ca_cert", "ssl_ca_cert"]),
        kube_client_cert=dict(type="path", aliases=["client_cert", "cert_file"]),
        kube_client_key=dict(type="path", no_log=False, aliases=["client_key", "key_file"]),
        kube_proxy=dict(type="str", aliases=["proxy"]),
    )


CONNECTION_REQUIRED_ONE_OF = [("homeserver_url", "kube_namespace")]
CONNECTION_MUTUALLY_EXCLUSIVE = [("kube_service", "kube_pod_selector")]
CONNECTION_REQUIRED_BY = {"kube_service": ("kube_namespace",), "kube_pod_selector": ("kube_namespace",)}


class Connection(object):
    """Client plus (optionally) the port-forward it runs through. Use as a context manager."""

    def __init__(self, params):
        self.params = params
        self.forwarder = None
        self.client = None

    def __enter__(self):
        p = self.params
        base_url = p.get("homeserver_url")
        if p.get("kube_namespace"):
            if not (p.get("kube_service") or p.get("kube_pod_selector")):
                raise SynapseAdminError("kube_namespace needs kube_service or kube_pod_selector")
            from ansible_collections.matrix.stack.plugins.module_utils.kube import port_forward as _port_forward  # pylint: disable=import-outside-toplevel
            try:
                self.forwarder = _port_forward.forwarder_from_params(p)
                base_url = self.forwarder.start()
            except _port_forward.PortForwardError as exc:
                if self.forwarder is not None:
                    self.forwarder.stop()
                raise SynapseAdminError(str(exc))
        self.client = SynapseAdminClient(
            base_url, access_token=p.get("admin_token"), timeout=p.get("timeout") or 30,
            validate_certs=p.get("validate_certs", True), ca_path=p.get("ca_path"),
            retries=p.get("retries") if p.get("retries") is not None else 5,
            max_retry_wait=p.get("max_retry_wait") or 120)
        return self.client

    def explain(self, exc):
        """The error message, plus what the port-forward reported (if one was used)."""
        msg = str(exc)
        if self.forwarder is not None and self.forwarder.errors:
            msg += " Port-forward: " + "; ".join(dict.fromkeys(self.forwarder.errors))
        return msg

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        if self.forwarder is not None:
            self.forwarder.stop()
        return False


def discover_server_name(client, given=None):
    """server_name from the option, the token's whoami, or the key endpoint."""
    if given:
        validate_server_name(given)
        return given
    if client.access_token:
        user_id = client.whoami().get("user_id", "")
        if ":" in user_id:
            return user_id.split(":", 1)[1]
    name = client.server_name_from_keys()
    if name:
        return name
    raise SynapseAdminError("Cannot discover the homeserver's server_name: set the server_name option")
