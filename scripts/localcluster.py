#!/usr/bin/env python
"""A real Kubernetes control plane on 127.0.0.1 with two kwok-simulated nodes and one real node.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real
programs (built from the pinned Kubernetes release by scripts/setup); kwok
plays the kubelets of two nodes, so pods are scheduled, admitted and marked Ready
but no container runs there. A tiny volume provisioner binds PersistentVolumeClaims
so StatefulSets progress as they would on a real cluster.

The real node (scripts/realnode.py; on by default where the machine allows it,
off with --no-real-node or MATRIX_STACK_REAL_NODE=0) runs pods for real:
containerd, kubelet, kube-proxy, kube-router's NetworkPolicy controller and
CoreDNS. It is labelled and tainted matrix-stack.test/node=real, so only pods
that ask for it land there (REAL_NODE_NAMESPACE_ANNOTATIONS on their namespace).

Usage: localcluster.py up|wait|down|status|logs|env|import-images|real-node|snapshot [--dir DIR] [--no-real-node]
"""

import argparse
import base64
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realnode  # noqa: E402  pylint: disable=wrong-import-position

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".work"
BIN = WORK / "bin"
DEFAULT_DIR = WORK / "cluster"
ETCD = os.environ.get("MATRIX_STACK_ETCD", str(BIN / "etcd"))
STORAGE_CLASS = "standard"
NODE_NAMES = ("kwok-node-0", "kwok-node-1")
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "provisioner",
              *realnode.COMPONENTS)
NODE_BIN = WORK / "node"
# OCI/docker archives (*.tar) imported into the real node's containerd at `up` and by `import-images`.
IMAGES_DIR = WORK / "images"
NODE_SELECTOR_LABEL = "matrix-stack.test/node"
KWOK_NODE_LABEL = {NODE_SELECTOR_LABEL: "kwok"}
REAL_NODE_NAME = realnode.NODE_NAME
# A namespace carrying these annotations has its pods placed on the real node by the API server's
# PodNodeSelector and PodTolerationRestriction admission plugins.
REAL_NODE_NAMESPACE_ANNOTATIONS = {
    "scheduler.alpha.kubernetes.io/node-selector": f"{NODE_SELECTOR_LABEL}=real",
    "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(
        [{"key": NODE_SELECTOR_LABEL, "operator": "Equal", "value": "real", "effect": "NoSchedule"}],
        separators=(",", ":")),
}


def real_node_wanted(flag=None):
    """--no-real-node wins, then MATRIX_STACK_REAL_NODE (0/1), then on."""
    if flag is not None:
        return flag
    return os.environ.get("MATRIX_STACK_REAL_NODE", "1").strip().lower() not in ("0", "false", "no", "off")


def log(msg):
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


pid_alive = realnode.pid_alive


class Cluster:
    def __init__(self, directory=DEFAULT_DIR, images_dirs=(IMAGES_DIR,)):
        self.dir = Path(directory)
        self.images_dirs = list(images_dirs)
        self.pki = self.dir / "pki"
        self.logs = self.dir / "logs"
        self.state_file = self.dir / "state.json"
        self.kubeconfig = self.dir / "kubeconfig"
        self.python = sys.executable
        self.script = str(Path(__file__).resolve())
        self.node = realnode.RealNode(self, NODE_BIN)

    log = staticmethod(log)

    # ----- state -------------------------------------------------------
    def state(self):
        if not self.state_file.exists():
            return {}
        return json.loads(self.state_file.read_text())

    def save_state(self, state):
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def running(self):
        pids = self.state().get("pids", {})
        return bool(pids) and all(pid_alive(pid) for pid in pids.values())

    # ----- PKI ---------------------------------------------------------
    def make_pki(self, port, node=None):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        import ipaddress

        self.pki.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)

        def write_key(name, key):
            path = self.pki / f"{name}.key"
            path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
            path.chmod(0o600)

        def write_cert(name, cert):
            (self.pki / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "matrix-stack-local-ca")])
        ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
                   .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
                   .sign(ca_key, hashes.SHA256()))
        write_key("ca", ca_key)
        write_cert("ca", ca_cert)

        def issue(name, common_name, orgs=(), server=False, ips=()):
            key = ec.generate_private_key(ec.SECP256R1())
            attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
            attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in orgs]
            builder = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca_name)
                       .public_key(key.public_key()).serial_number(x509.random_serial_number())
                       .not_valid_before(now - datetime.timedelta(minutes=5))
                       .not_valid_after(now + datetime.timedelta(days=30)))
            if server:
                builder = builder.add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"), x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default"),
                    x509.DNSName("kubernetes.default.svc"), x509.DNSName("kubernetes.default.svc.cluster.local"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
                    *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips),
                ]), critical=False)
                usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
            else:
                usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            write_key(name, key)
            write_cert(name, builder.sign(ca_key, hashes.SHA256()))

        issue("apiserver", "kube-apiserver", server=True, ips=[node["host_ip"]] if node else [])
        issue("admin", "matrix-stack-admin", orgs=("system:masters",))
        issue("controller-manager", "system:kube-controller-manager")
        issue("scheduler", "system:kube-scheduler")
        issue("kwok", "kwok-controller", orgs=("system:masters",))
        # The API server's identity towards kubelets, and the real node's components.
        issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", orgs=("system:masters",))
        if node:
            issue("kubelet", f"system:node:{REAL_NODE_NAME}", orgs=("system:nodes",))
            issue("kubelet-serving", f"system:node:{REAL_NODE_NAME}", server=True, ips=[node["node_ip"]])
            issue("kube-proxy", "system:kube-proxy")
            issue("kube-router", "matrix-stack:kube-router")
        sa_key = ec.generate_private_key(ec.SECP256R1())
        write_key("sa", sa_key)
        (self.pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

        for user in ("admin", "controller-manager", "scheduler", "kwok"):
            path = self.dir / ("kubeconfig" if user == "admin" else f"{user}.kubeconfig")
            self.write_kubeconfig(path, user, port)

    def write_kubeconfig(self, path, user, port=None, server=None):
        server = server or f"https://127.0.0.1:{port}"

        def b64(name):
            return base64.b64encode((self.pki / name).read_bytes()).decode()

        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "matrix-stack-local", "cluster": {
                "server": server, "certificate-authority-data": b64("ca.crt")}}],
            "users": [{"name": user, "user": {
                "client-certificate-data": b64(f"{user}.crt"), "client-key-data": b64(f"{user}.key")}}],
            "contexts": [{"name": "matrix-stack-local", "context": {"cluster": "matrix-stack-local", "user": user}}],
            "current-context": "matrix-stack-local",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    # ----- processes ---------------------------------------------------
    def spawn(self, name, argv, env=None):
        self.logs.mkdir(parents=True, exist_ok=True)
        logfile = open(self.logs / f"{name}.log", "ab")  # pylint: disable=consider-using-with
        proc = subprocess.Popen(argv, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.dir, env=env)  # pylint: disable=consider-using-with
        logfile.close()
        state = self.state()
        state.setdefault("pids", {})[name] = proc.pid
        self.save_state(state)
        return proc

    def kubectl(self, *args, check=True, input_text=None):
        return subprocess.run([str(BIN / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args], check=check,
                              capture_output=True, text=True, input=input_text, timeout=120)

    def wait_for(self, what, predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, pid in self.state().get("pids", {}).items():
                if not pid_alive(pid):
                    raise RuntimeError(f"{name} (pid {pid}) exited while waiting for {what}; "
                                       f"see {self.logs / (name + '.log')}:\n{self.tail(name)}")
            if predicate():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}; logs in {self.logs}")

    def tail(self, name, lines=20):
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def up(self, timeout=180, real_node=None):
        if self.running():
            log(f"already running (kubeconfig {self.kubeconfig})")
            return
        self.down(quiet=True)
        with_node = real_node_wanted(real_node)
        if with_node:
            reason = realnode.unavailable_reason(NODE_BIN)
            if reason:
                log(f"no real node: {reason}; only the kwok nodes will run (MATRIX_STACK_REAL_NODE=0 to silence this)")
                with_node = False
        else:
            log("no real node (--no-real-node or MATRIX_STACK_REAL_NODE=0): only the kwok nodes will run")
        missing = [str(BIN / b) for b in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")
                   if not (BIN / b).exists()]
        if not Path(ETCD).exists():
            missing.append(ETCD)
        if missing:
            raise SystemExit(f"missing cluster binaries: {', '.join(missing)}; run scripts/setup first")
        for point in realnode.mounts_under(self.dir):  # never let rmtree walk into a leftover mount
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        store = self.node.keep_image_store()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.node.restore_image_store(store)
        ports = {"etcd_client": free_port(), "etcd_peer": free_port(), "apiserver": free_port()}
        self.save_state({"ports": ports, "pids": {}})
        node = self.node.prepare_state() if with_node else None
        self.make_pki(ports["apiserver"], node)
        pki = self.pki
        etcd_url = f"http://127.0.0.1:{ports['etcd_client']}"
        peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
        log("starting etcd")
        self.spawn("etcd", [ETCD, "--name=local", f"--data-dir={self.dir / 'etcd'}",
                            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
                            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
                            f"--initial-cluster=local={peer_url}", "--quota-backend-bytes=4294967296",
                            "--unsafe-no-fsync"])
        log("starting kube-apiserver")
        self.spawn("kube-apiserver", [
            str(BIN / "kube-apiserver"), f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
            "--endpoint-reconciler-type=none", "--service-cluster-ip-range=10.96.0.0/16",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--authorization-mode=Node,RBAC", "--allow-privileged=true",
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,"
            "DefaultStorageClass,ResourceQuota,DefaultTolerationSeconds,MutatingAdmissionWebhook,"
            "ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,NodeRestriction,PodNodeSelector,"
            "PodTolerationRestriction",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}", "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false", "--v=1",
        ])
        self.wait_for("the API server to answer /readyz",
                      lambda: self.kubectl("get", "--raw=/readyz", check=False).returncode == 0, timeout)
        log("starting kube-controller-manager, kube-scheduler and kwok")
        self.spawn("kube-controller-manager", [
            str(BIN / "kube-controller-manager"), f"--kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--use-service-account-credentials=true", "--controllers=*,-nodeipam,-cloud-node-lifecycle",
            "--concurrent-deployment-syncs=10", "--v=1",
        ])
        self.spawn("kube-scheduler", [
            str(BIN / "kube-scheduler"), f"--kubeconfig={self.dir / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={self.dir / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={self.dir / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false", "--v=1",
        ])
        self.spawn("kwok", [
            str(BIN / "kwok"), f"--kubeconfig={self.dir / 'kwok.kubeconfig'}",
            "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=10.244.0.0/16", "--node-ip=10.244.255.254", "--node-lease-duration-seconds=40",
        ])
        self.spawn("provisioner", [sys.executable, str(Path(__file__).resolve()), "provision",
                                   f"--dir={self.dir}"])
        self.bootstrap_objects()
        if node:
            log(f"starting the real node {REAL_NODE_NAME} (node IP {node['node_ip']} in network namespace {node['netns']})")
            try:
                took = self.node.start(self.images_dirs, timeout)
            except Exception:
                log(f"the real node failed to start; logs in {self.logs}")
                raise
            log(f"real node Ready with CoreDNS in {took:.1f} s")
        self.wait(timeout)
        log(f"ready: export KUBECONFIG={self.kubeconfig}")

    def bootstrap_objects(self):
        nodes = [{
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"type": "kwok", **KWOK_NODE_LABEL, "kubernetes.io/hostname": name,
                                    "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "topology.kubernetes.io/zone": "local"}},
            "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "500Gi"},
                       "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "500Gi"}},
        } for name in NODE_NAMES]
        storage_class = {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS,
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "local.matrix-stack.invalid/kwok", "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate", "allowVolumeExpansion": True,
        }
        kube_router = [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "matrix-stack:kube-router"},
             "rules": [{"apiGroups": [""], "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
                        "verbs": ["get", "list", "watch"]},
                       {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
                        "verbs": ["get", "list", "watch"]},
                       {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                        "verbs": ["get", "list", "watch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "matrix-stack:kube-router"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "matrix-stack:kube-router"},
             "subjects": [{"kind": "User", "name": "matrix-stack:kube-router", "apiGroup": "rbac.authorization.k8s.io"}]},
        ]
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": [*nodes, storage_class, *kube_router]})
        self.wait_for("the default service account controller",
                      lambda: self.kubectl("apply", "-f", "-", input_text=manifest, check=False).returncode == 0, 60)

    def wait(self, timeout=180):
        def nodes_ready():
            result = self.kubectl("get", "nodes", "-o", "json", check=False)
            if result.returncode:
                return False
            items = json.loads(result.stdout)["items"]
            expected = len(NODE_NAMES) + (1 if "real_node" in self.state() else 0)
            return len(items) >= expected and all(
                any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
                for n in items)

        def default_sa():
            return self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0

        self.wait_for("the API server", lambda: self.kubectl("get", "--raw=/readyz", check=False).returncode == 0, timeout)
        self.wait_for("kwok nodes to be Ready", nodes_ready, timeout)
        self.wait_for("the default ServiceAccount", default_sa, timeout)

    def down(self, quiet=False):
        # The real node first, while the API server can still delete its pods.
        self.node.stop(quiet=quiet)
        pids = self.state().get("pids", {})
        for name in reversed(COMPONENTS):
            pid = pids.get(name)
            if pid and pid_alive(pid):
                if not quiet:
                    log(f"stopping {name} (pid {pid})")
                try:
                    os.killpg(pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                deadline = time.monotonic() + 20
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if pid_alive(pid):
                    os.killpg(pid, signal.SIGKILL)
        if pids:
            state = self.state()
            state["pids"] = {}
            self.save_state(state)

    def status(self):
        pids = self.state().get("pids", {})
        if not pids:
            print("down")
            return 1
        for name in COMPONENTS:
            pid = pids.get(name)
            if name in realnode.COMPONENTS and name not in pids:
                continue
            print(f"{name:25} pid {pid or '-':>8} {'running' if pid and pid_alive(pid) else 'STOPPED'}")
        print(f"kubeconfig: {self.kubeconfig}")
        return 0 if self.running() else 1

    def collect_logs(self, dest):
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for path in self.logs.glob("*.log"):
            shutil.copy(path, dest / path.name)
        print(dest)


def provision(cluster):
    """Bind Pending PVCs of our StorageClass to fresh PVs, and delete released ones.

    kwok has no volume plugins, so this stands in for a dynamic provisioner. The volumes are hostPath
    directories under the cluster directory (so the real node's pods really store data there, and `up` wipes
    them); they are world-writable because hostPath volumes ignore fsGroup and the stack runs as non-root.
    """
    # Imported here: the provisioner is the only part that needs the client.
    from kubernetes import client, config  # pylint: disable=import-outside-toplevel

    config.load_kube_config(str(cluster.kubeconfig))
    core = client.CoreV1Api()
    while True:
        try:
            for pvc in core.list_persistent_volume_claim_for_all_namespaces().items:
                if pvc.status.phase != "Pending" or pvc.spec.volume_name:
                    continue
                if (pvc.spec.storage_class_name or STORAGE_CLASS) != STORAGE_CLASS:
                    continue
                name = f"pv-{pvc.metadata.uid}"
                path = cluster.dir / "volumes" / name
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(0o777)
                body = client.V1PersistentVolume(
                    metadata=client.V1ObjectMeta(name=name, annotations={
                        "pv.kubernetes.io/provisioned-by": "local.matrix-stack.invalid/kwok"}),
                    spec=client.V1PersistentVolumeSpec(
                        capacity={"storage": pvc.spec.resources.requests["storage"]},
                        access_modes=pvc.spec.access_modes, storage_class_name=STORAGE_CLASS,
                        persistent_volume_reclaim_policy="Delete",
                        host_path=client.V1HostPathVolumeSource(path=str(path), type="Directory"),
                        claim_ref=client.V1ObjectReference(namespace=pvc.metadata.namespace, name=pvc.metadata.name,
                                                           uid=pvc.metadata.uid, kind="PersistentVolumeClaim")))
                try:
                    core.create_persistent_volume(body)
                except client.ApiException as exc:
                    if exc.status != 409:
                        raise
            for pv in core.list_persistent_volume().items:
                if pv.spec.storage_class_name == STORAGE_CLASS and pv.status.phase in ("Released", "Failed"):
                    core.delete_persistent_volume(pv.metadata.name)
                    shutil.rmtree(cluster.dir / "volumes" / pv.metadata.name, ignore_errors=True)
        except Exception as exc:  # pylint: disable=broad-except
            log(f"provisioner: {exc}")
        time.sleep(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("up", "wait", "down", "status", "logs", "env", "import-images",
                                            "real-node", "snapshot", "provision", "apiproxy"))
    parser.add_argument("--dir", default=str(DEFAULT_DIR), help="state directory (default: .work/cluster)")
    parser.add_argument("--dest", default=str(WORK / "cluster-logs"), help="where `logs` copies the logs")
    parser.add_argument("--timeout", type=int, default=180)
    parser.add_argument("--no-real-node", dest="real_node", action="store_const", const=False, default=None,
                        help="only the kwok nodes (also MATRIX_STACK_REAL_NODE=0)")
    parser.add_argument("--listen", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cluster = Cluster(args.dir)
    if args.command == "up":
        cluster.up(args.timeout, real_node=args.real_node)
    elif args.command == "import-images":
        if "real_node" not in cluster.state() or not cluster.running():
            raise SystemExit("no real node is running (scripts/cluster up)")
        imported = cluster.node.import_images(cluster.images_dirs)
        for archive in imported:
            print(f"imported {archive}")
        if not imported:
            print("every archive is already imported")
    elif args.command == "real-node":
        # For scripts and playbooks: the node's name and the annotations that put a namespace's pods on it.
        running = "real_node" in cluster.state() and cluster.running()
        print(json.dumps({"name": REAL_NODE_NAME if running else None,
                          "namespace_annotations": REAL_NODE_NAMESPACE_ANNOTATIONS}))
        return 0 if running else 1
    elif args.command == "snapshot":
        # What the real node could leave on the host; diff one taken before `up` with one taken after `down`.
        print(json.dumps(realnode.machine_snapshot(), indent=1))
    elif args.command == "apiproxy":
        realnode.forward(args.listen, args.target)
    elif args.command == "wait":
        cluster.wait(args.timeout)
    elif args.command == "down":
        cluster.down()
    elif args.command == "status":
        return cluster.status()
    elif args.command == "logs":
        cluster.collect_logs(args.dest)
    elif args.command == "env":
        print(f"export KUBECONFIG={cluster.kubeconfig} K8S_AUTH_KUBECONFIG={cluster.kubeconfig}")
    elif args.command == "provision":
        provision(cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())
