"""The local cluster's real node: pods really run, the project's NetworkPolicies are really enforced.

Probe pods (a tiny static Go program, cluster/go/probe, in an image built by scripts/setup-node) carry the
stack's pod labels and listen on the stack's ports; other probes dial them through the pod network. Every
"cannot reach" has a "can reach" twin, and the last checks flip the policies to show the outcome follows them.
"""

import json
import secrets
import socket
import subprocess
import time

import pytest

from conftest import localcluster
from helpers.rendered import render_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("real-node")]

# The networkpolicy role alone, with every role's defaults: the same objects as site.yml's render mode, faster.
INSTANCE = "matrix"
CLUSTER_DNS = "10.96.0.10:53"
# Selector labels of the stack's pods (roles/*/vars/main.yml) for instance "matrix".
LABELS = {
    "synapse": {"app.kubernetes.io/name": "synapse", "app.kubernetes.io/instance": INSTANCE},
    "postgres": {"app.kubernetes.io/name": "postgres", "app.kubernetes.io/instance": INSTANCE},
    "element": {"app.kubernetes.io/name": "element", "app.kubernetes.io/instance": INSTANCE},
}
RESTRICTED = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def probe_image():
    return json.loads((localcluster.NODE_BIN / "images.json").read_text())["probe"]


def probe_pod(name, args, labels=None, low_ports=False, ports=None):
    security = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}}
    if low_ports:
        # A "safe" sysctl, allowed under PSS restricted: lets the non-root probe answer DNS on port 53.
        security["sysctls"] = [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {"probe": name}},
            "spec": {"securityContext": security, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "probe", "image": probe_image(), "imagePullPolicy": "Never",
                                     "args": args, "securityContext": RESTRICTED,
                                     "ports": [{"name": port_name, "containerPort": number, "protocol": "TCP"}
                                               for port_name, number in (ports or {}).items()],
                                     "resources": {"requests": {"cpu": "5m", "memory": "8Mi"},
                                                   "limits": {"memory": "32Mi"}}}]}}


class Pods:
    def __init__(self, kube):
        self.kube = kube

    def create(self, namespace, *pods):
        manifest = {"apiVersion": "v1", "kind": "List", "items": pods}
        self.kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))

    def wait_ready(self, namespace, timeout=60):
        self.kube.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod", "--all", f"--timeout={timeout}s")
        pods = json.loads(self.kube.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
        for pod in pods:
            assert pod["spec"]["nodeName"] == localcluster.REAL_NODE_NAME, pod["metadata"]["name"]
        return {pod["metadata"]["name"]: pod["status"]["podIP"] for pod in pods}

    def probe(self, namespace, pod, *args):
        return self.kube.kubectl("exec", "-n", namespace, pod, "--", "/probe", *args, check=False)


def eventually(check, expected, what, timeout=20):
    """Poll check() until it returns expected (kube-router applies policy changes asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if (result.returncode == 0) == expected:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: expected {'success' if expected else 'failure'} within {timeout}s, got "
                                 f"rc={result.returncode} {result.stdout.strip()} {result.stderr.strip()}")
        time.sleep(0.5)


def test_restricted_pod_runs_with_logs_exec_port_forward_and_api(kube_cluster, real_node_namespace):
    ns = real_node_namespace()
    pods = Pods(kube_cluster)
    pods.create(ns, probe_pod("web", ["listen", "tcp:8080"]))
    pods.wait_ready(ns)
    logs = kube_cluster.kubectl("logs", "-n", ns, "web").stdout
    assert "listening tcp:8080" in logs
    execed = pods.probe(ns, "web", "dial", "127.0.0.1:8080")
    assert execed.returncode == 0 and "ok 8080" in execed.stdout, execed.stderr
    # The in-cluster API server through the `kubernetes` ClusterIP, with the pod's own token (the backup CronJob's path).
    api = pods.probe(ns, "web", "api", "5s")
    assert api.returncode == 0, api.stderr
    assert json.loads(api.stdout)["gitVersion"].startswith("v1.")
    dns = pods.probe(ns, "web", "dns", CLUSTER_DNS, "kubernetes.default.svc.cluster.local")
    assert dns.stdout.split() == ["10.96.0.1"], dns.stderr

    forward = subprocess.Popen(  # pylint: disable=consider-using-with
        [str(localcluster.BIN / "kubectl"), f"--kubeconfig={kube_cluster.kubeconfig}", "port-forward", "-n", ns,
         "pod/web", ":8080"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = forward.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 8080"
        port = int(line.split("127.0.0.1:")[1].split()[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.settimeout(10)
            assert conn.recv(64) == b"ok 8080\n"
    finally:
        forward.terminate()
        forward.wait(10)


def test_kwok_nodes_keep_their_pods(kube_cluster, kube_namespace):
    """A namespace without the annotations never lands on the real node (it is tainted)."""
    ns = kube_namespace(restricted=False)
    kube_cluster.kubectl("create", "deployment", "-n", ns, "plain", f"--image={probe_image()}", "--replicas=4")
    kube_cluster.kubectl("rollout", "status", "-n", ns, "deployment/plain", "--timeout=60s")
    pods = json.loads(kube_cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
    nodes = {pod["spec"]["nodeName"] for pod in pods}
    assert nodes and all(node.startswith("kwok-node-") for node in nodes), nodes


@pytest.fixture(scope="module")
def rendered_policies(run_playbook):
    """The NetworkPolicies site.yml renders for the minimal inventory (every default but the required values)."""
    policies = [obj for (kind, _name), obj in render_stack(run_playbook, "minimal").items() if kind == "NetworkPolicy"]
    names = {p["metadata"]["name"] for p in policies}
    assert {f"{INSTANCE}-default-deny", f"{INSTANCE}-allow-dns", f"{INSTANCE}-postgres", f"{INSTANCE}-synapse",
            f"{INSTANCE}-element"} <= names, names
    return policies


def apply_policies(kube, namespace, policies):
    items = []
    for policy in policies:
        policy = json.loads(json.dumps(policy))
        policy["metadata"]["namespace"] = namespace
        items.append(policy)
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def test_networkpolicies_are_enforced(kube_cluster, real_node_namespace, rendered_policies):
    """The stack's own policies on the real node: postgres, Synapse metrics, Element's named port and DNS, each with
    its positive twin."""
    kube = kube_cluster
    pods = Pods(kube)
    stack = real_node_namespace(prefix="stack")
    outside = real_node_namespace(prefix="outsider")
    # The default inventory lets the namespace named "monitoring" scrape Synapse's metrics port.
    # ... and the namespace named "ingress-nginx" reach Element's port (the NetworkPolicy names it: "http").
    created = [name for name in ("monitoring", "ingress-nginx")
               if kube.kubectl("get", "namespace", name, check=False).returncode != 0]
    for name in created:
        kube.kubectl("create", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": name, "annotations": localcluster.REAL_NODE_NAMESPACE_ANNOTATIONS,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}))
        kube.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s")
    controller = f"controller-{secrets.token_hex(3)}"
    scraper = f"scraper-{secrets.token_hex(3)}"
    try:
        apply_policies(kube, stack, rendered_policies)
        pods.create(stack,
                    probe_pod("postgres", ["listen", "tcp:5432"], LABELS["postgres"]),
                    probe_pod("synapse", ["listen", "tcp:8008", "tcp:9000"], LABELS["synapse"]),
                    probe_pod("element", ["listen", "tcp:8080", "tcp:9090"], LABELS["element"], ports={"http": 8080}))
        pods.create(outside, probe_pod("outsider", ["listen", "tcp:8080"]),
                    probe_pod("resolver", ["listen", "dns:53"], low_ports=True))
        pods.create("monitoring", probe_pod(scraper, ["listen", "tcp:8080"]))
        pods.create("ingress-nginx", probe_pod(controller, ["listen", "tcp:8080"]))
        ips = pods.wait_ready(stack)
        ips.update(pods.wait_ready(outside))
        ips.update(pods.wait_ready("monitoring"))
        ips.update(pods.wait_ready("ingress-nginx"))
        postgres, metrics = f"{ips['postgres']}:5432", f"{ips['synapse']}:9000"
        rogue = f"{ips['resolver']}:53"

        def dial(namespace, pod, target):
            return lambda: pods.probe(namespace, pod, "dial", target, "2s")

        def dns(namespace, pod, server, name="kubernetes.default.svc.cluster.local"):
            return lambda: pods.probe(namespace, pod, "dns", server, name, "2s")

        # PostgreSQL: Synapse may connect, Element may not.
        eventually(dial(stack, "synapse", postgres), True, "synapse -> postgres:5432")
        eventually(dial(stack, "element", postgres), False, "element -> postgres:5432")
        # Synapse's metrics port: the monitoring namespace may scrape, another namespace may not.
        eventually(dial("monitoring", scraper, metrics), True, "monitoring -> synapse:9000")
        eventually(dial(outside, "outsider", metrics), False, "outsider -> synapse:9000")
        # Element: the ingress controller's namespace may connect to its named port, another namespace may not.
        web = f"{ips['element']}:8080"
        eventually(dial("ingress-nginx", controller, web), True, "ingress controller -> element:8080 (port http)")
        eventually(dial(outside, "outsider", web), False, "outsider -> element:8080")
        eventually(dial("ingress-nginx", controller, f"{ips['element']}:9090"), False, "ingress controller -> element:9090")
        # DNS: the cluster DNS answers the stack's pods; another resolver is unreachable from them, though it
        # answers a pod outside the stack's namespace.
        answer = eventually(dns(stack, "element", CLUSTER_DNS), True, "element -> cluster DNS")
        assert answer.stdout.split() == ["10.96.0.1"]
        eventually(dns(outside, "outsider", rogue), True, "outsider -> other resolver")
        eventually(dns(stack, "element", rogue), False, "element -> other resolver")
        eventually(dial(stack, "element", f"{ips['outsider']}:8080"), False, "element -> a pod elsewhere")

        # The outcome follows the policies: without the PostgreSQL allow rule Synapse is cut off too, and an
        # allow-all policy lets Element through.
        kube.kubectl("delete", "networkpolicy", "-n", stack, f"{INSTANCE}-postgres")
        eventually(dial(stack, "synapse", postgres), False, "synapse -> postgres:5432 without the allow policy")
        kube.kubectl("apply", "-n", stack, "-f", "-", input=json.dumps({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "allow-all"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]}}))
        eventually(dial(stack, "element", postgres), True, "element -> postgres:5432 with an allow-all policy")
    finally:
        for name, pod in (("monitoring", scraper), ("ingress-nginx", controller)):
            if name in created:
                kube.kubectl("delete", "namespace", name, "--wait=false", check=False)
            else:
                kube.kubectl("delete", "pod", "-n", name, pod, "--wait=false", check=False)
