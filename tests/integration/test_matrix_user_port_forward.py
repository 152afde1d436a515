"""matrix_user's port-forward option against the real Kubernetes API server of the local cluster.

The local cluster runs kwok fake nodes: pods become Ready but no kubelet serves them, so the API server
cannot complete a port-forward to any pod. What is tested here, for real: the Service -> selector -> ready
pod -> named targetPort resolution through the API server, RBAC and missing-object errors, and that a
refused port-forward surfaces as a clear error (before any Admin API request, nothing changed). The
forwarding itself (websocket channel framing, HTTP keep-alive through the tunnel) is covered end to end
against a protocol-level fake API server in tests/unit/plugins/module_utils/test_port_forward.py.
"""

import json
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.kube]

COLLECTIONS = Path(__file__).resolve().parents[2] / ".work" / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

from ansible_collections.matrix.stack.plugins.module_utils.kube import port_forward as pf  # noqa: E402

MANIFESTS = """
apiVersion: v1
kind: Pod
metadata:
  name: synapse-main-0
  labels: {app: synapse-main}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 10991, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: synapse
      image: example.invalid/synapse:1
      ports: [{name: http, containerPort: 8008}]
      securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
---
apiVersion: v1
kind: Service
metadata:
  name: synapse-main
spec:
  selector: {app: synapse-main}
  ports: [{name: http, port: 8008, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata:
  name: headless-no-selector
spec:
  ports: [{port: 8008}]
"""


@pytest.fixture
def namespace(kube_cluster, kube_namespace):
    ns = kube_namespace()
    kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=MANIFESTS)
    kube_cluster.kubectl("wait", "-n", ns, "--for=condition=Ready", "pod/synapse-main-0", "--timeout=60s")
    return ns


def params(kube_cluster, ns, **kw):
    out = {"kubeconfig": kube_cluster.kubeconfig, "kube_namespace": ns, "kube_port": 8008}
    out.update(kw)
    return out


def test_resolves_service_to_ready_pod_and_named_port(kube_cluster, namespace):
    fwd = pf.forwarder_from_params(params(kube_cluster, namespace, kube_service="synapse-main"))
    try:
        assert fwd.resolve() == ("synapse-main-0", 8008)
    finally:
        fwd.stop()


def test_refused_port_forward_is_a_clear_error(kube_cluster, namespace):
    fwd = pf.forwarder_from_params(params(kube_cluster, namespace, kube_service="synapse-main"))
    with pytest.raises(pf.PortForwardError) as info:
        fwd.start()
    fwd.stop()
    msg = str(info.value)
    assert "refused the port-forward to pod %s/synapse-main-0 port 8008" % namespace in msg
    assert "Handshake status" in msg


def test_selector_errors(kube_cluster, namespace):
    for kw, expected in (({"kube_service": "missing"}, "not found"),
                         ({"kube_service": "headless-no-selector"}, "has no selector"),
                         ({"kube_pod_selector": "app=nothing"}, "no running and ready pod"),
                         ({"kube_service": "synapse-main", "kube_port": 9999}, "has no port 9999")):
        fwd = pf.forwarder_from_params(params(kube_cluster, namespace, **kw))
        with pytest.raises(pf.PortForwardError, match=expected):
            fwd.start()
        fwd.stop()


def test_forbidden_without_rbac(kube_cluster, namespace):
    """A service account that may read pods/services but not create pods/portforward."""
    rbac = f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: {namespace}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: reader, namespace: {namespace}}}
rules:
  - apiGroups: [""]
    resources: [pods, services]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}}
subjects: [{{kind: ServiceAccount, name: reader, namespace: {namespace}}}]
"""
    kube_cluster.kubectl("apply", "-f", "-", input=rbac)
    token = kube_cluster.kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    config = yaml.safe_load(Path(kube_cluster.kubeconfig).read_text())
    cluster = config["clusters"][0]["cluster"]
    ca = Path(kube_cluster.kubeconfig).parent / "reader-ca.crt"
    if "certificate-authority-data" in cluster:
        import base64  # pylint: disable=import-outside-toplevel
        ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    else:
        ca = Path(cluster["certificate-authority"])
    fwd = pf.forwarder_from_params({"kube_host": cluster["server"], "kube_api_key": token, "kube_ca_cert": str(ca),
                                    "kube_namespace": namespace, "kube_service": "synapse-main", "kube_port": 8008})
    with pytest.raises(pf.PortForwardError) as info:
        fwd.start()
    fwd.stop()
    assert "403" in str(info.value) and token not in str(info.value)


def test_module_through_ansible_reports_the_port_forward_error(kube_cluster, namespace, run_playbook, tmp_path):
    playbook = tmp_path / "pf.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "user over port-forward", "matrix.stack.matrix_user": {
            "kube_namespace": namespace, "kube_service": "synapse-main", "kubeconfig": kube_cluster.kubeconfig,
            "admin_token": "syt_never_sent_anywhere", "user": "alice"}, "ignore_errors": True},
        {"name": "info over port-forward", "matrix.stack.matrix_user_info": {
            "kube_namespace": namespace, "kube_pod_selector": "app=synapse-main", "kubeconfig": kube_cluster.kubeconfig,
            "admin_token": "syt_never_sent_anywhere"}, "ignore_errors": True}]}]))
    res = run_playbook(playbook, extra_vars={"ansible_python_interpreter": sys.executable}, json_output=True)
    results = [t["hosts"]["localhost"] for t in res.results["plays"][0]["tasks"]]
    for result in results:
        assert result["failed"] is True and result["changed"] is False
        assert "refused the port-forward to pod %s/synapse-main-0 port 8008" % namespace in result["msg"]
    assert "syt_never_sent_anywhere" not in json.dumps(res.results)
