"""The local cluster's real node: containerd, kubelet, kube-proxy, kube-router and CoreDNS, really running pods.

Everything the node changes in the network lives in a network namespace of its own (`matrix-stack-N`):
the node IP (on a veth pair created for it, in 10.251.N.0/30, a range reserved for cluster N), the CNI
bridge and the pods' veths, kube-proxy's and kube-router's iptables rules and ipsets, and the namespace's
sysctls. Deleting the namespace takes all of it away, and two clusters on one machine never see each other's
rules. The namespace has no default route: pods reach only each other, their Services and the API server
(through a forwarder on the host end of the veth, 10.251.N.1:6443, to the API server on 127.0.0.1).

What lives outside the namespace is recorded and undone by `stop`: processes (by PID), mounts under the node
directory, the cgroup subtree `/matrix-stack-N` of every hierarchy, and the host sysctls the kubelet sets
(restored when the last real node on the machine stops).
"""

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

NODE_NAME = "real-node"
NODE_LABEL = ("matrix-stack.test/node", "real")
POD_CIDR = "10.245.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_DNS = "10.96.0.10"
LINK_NET = ipaddress.ip_network("10.251.0.0/16")
API_FORWARD_PORT = 6443
MAX_NODES = 64
# Host sysctls the kubelet sets at start (pkg/kubelet/cm setupKernelTunables); restored at stop.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
MACHINE_STATE = Path("/run/matrix-stack")
# Fixed host paths a node may create whatever it is told (the kubelet's device-plugin socket, ip netns).
HOST_PATHS = ("/var/lib/kubelet", "/run/netns", "/var/lib/cni")
# Where the CNI library caches each pod's result, whatever containerd is told.
CNI_CACHE = Path("/var/lib/cni/results")
CGROUP_ROOT = Path("/sys/fs/cgroup")
COMPONENTS = ("apiproxy", "containerd", "kubelet", "kube-proxy", "kube-router")
REQUIRED_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ipset", "nsenter", "ip")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
CNI_BIN_DIR = Path("/usr/lib/cni")


def sh(*argv, check=True, timeout=60):
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)


def unavailable_reason(node_bin):
    """Why this machine cannot run the real node, or None when it can."""
    if os.geteuid() != 0:
        return "not running as root (containerd, the kubelet and the network namespace need root)"
    missing = [str(Path(node_bin) / b) for b in ("kubelet", "kube-proxy", "kube-router", "images.json")
               if not (Path(node_bin) / b).exists()]
    missing += [t for t in REQUIRED_TOOLS if not shutil.which(t)]
    missing += [str(CNI_BIN_DIR / p) for p in CNI_PLUGINS if not (CNI_BIN_DIR / p).exists()]
    if missing:
        return f"missing {', '.join(missing)} (run scripts/setup)"
    if not (CGROUP_ROOT / "memory").is_dir() and not (CGROUP_ROOT / "cgroup.controllers").exists():
        return f"no cgroup hierarchy under {CGROUP_ROOT}"
    return None


def cgroup_hierarchies():
    """Mount points of the cgroup hierarchies (v1 controllers, the named systemd one, v2), from /proc/mounts."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] in ("cgroup", "cgroup2") and fields[1].startswith(str(CGROUP_ROOT)):
            out.append(Path(fields[1]))
    return out


def mounts_under(prefix):
    """Mount points at or below prefix, deepest first."""
    prefix = str(prefix).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if (point + "/").startswith(prefix):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def kill_pids(pids, grace=10.0):
    pids = [p for p in pids if p and p > 1 and pid_alive(p)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class RealNode:
    """One real node of the cluster whose directory is cluster.dir; state kept in the cluster's state.json."""

    def __init__(self, cluster, node_bin):
        self.cluster = cluster
        self.bin = Path(node_bin)
        self.dir = cluster.dir / "node"

    @property
    def run_dir(self):
        """containerd's sockets: unix socket paths must stay short (< 104 bytes), whatever the cluster directory."""
        return MACHINE_STATE / f"node-{self.index}"

    @property
    def sock(self):
        return self.run_dir / "containerd.sock"

    # ----- identity ----------------------------------------------------
    @property
    def index(self):
        return self.cluster.state().get("real_node", {}).get("index")

    def names(self, index=None):
        index = self.index if index is None else index
        net = list(LINK_NET.subnets(new_prefix=30))[index]
        return {"netns": f"matrix-stack-{index}", "host_if": f"msnode{index}h", "node_if": f"msnode{index}n",
                "host_ip": str(net[1]), "node_ip": str(net[2]), "prefix": 30, "cgroup": f"matrix-stack-{index}"}

    @staticmethod
    def pick_index():
        used = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
        links = sh("ip", "-o", "link", "show").stdout
        for index in range(MAX_NODES):
            if f"matrix-stack-{index}" not in used and f"msnode{index}h" not in links:
                return index
        raise RuntimeError(f"all {MAX_NODES} real-node slots are taken (ip netns list)")

    def in_netns(self, *argv):
        return ["nsenter", f"--net=/run/netns/{self.names()['netns']}", "--", *argv]

    # ----- start -------------------------------------------------------
    def prepare_state(self):
        index = self.pick_index()
        state = self.cluster.state()
        state["real_node"] = {"index": index}
        self.cluster.save_state(state)
        return self.names(index)

    def start(self, images_dirs, timeout=120):
        n = self.names()
        t0 = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hold_machine()
        self.make_network(n)
        self.make_cgroups(n)
        self.write_configs(n)
        spawn = self.cluster.spawn
        spawn("apiproxy", [self.cluster.python, self.cluster.script, "apiproxy",
                           f"--listen={n['host_ip']}:{API_FORWARD_PORT}",
                           f"--target=127.0.0.1:{self.cluster.state()['ports']['apiserver']}"])
        self.api_endpoints(n)
        spawn("containerd", self.in_netns("containerd", f"--config={self.dir / 'containerd.toml'}"))
        self.cluster.wait_for("containerd", lambda: self.ctr("version", check=False).returncode == 0, timeout)
        self.forget_containers()
        self.import_images(images_dirs)
        kubelet_dir = self.dir / "kubelet"
        spawn("kubelet", self.in_netns(
            str(self.bin / "kubelet"), f"--config={self.dir / 'kubelet.yaml'}",
            f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}", f"--root-dir={kubelet_dir}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={n['node_ip']}",
            f"--node-labels={NODE_LABEL[0]}={NODE_LABEL[1]}", "--v=1"))
        spawn("kube-proxy", self.in_netns(str(self.bin / "kube-proxy"), f"--config={self.dir / 'kube-proxy.yaml'}",
                                          "--v=1"))
        self.cluster.wait_for("the real node to register", lambda: self.cluster.kubectl(
            "get", "node", NODE_NAME, check=False).returncode == 0, timeout)
        # kube-router looks its node up once at start.
        spawn("kube-router", self.in_netns(
            str(self.bin / "kube-router"), f"--kubeconfig={self.dir / 'kube-router.kubeconfig'}",
            f"--hostname-override={NODE_NAME}", "--run-firewall=true", "--run-router=false",
            "--run-service-proxy=false", "--enable-ipv6=false", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--health-port=0", "--metrics-port=0", "--v=1"))
        # No IPAM controller runs: give the node the pod range its CNI uses (kube-proxy and kube-router read it).
        self.cluster.kubectl("patch", "node", NODE_NAME, "--type=merge", "-p",
                             json.dumps({"spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR]}}), check=False)
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input_text=json.dumps(self.dns_objects()))
        self.cluster.wait_for("the real node to be Ready", self.ready, timeout)
        self.cluster.wait_for("CoreDNS", lambda: self.cluster.kubectl(
            "rollout", "status", "deployment/coredns", "-n", "kube-system", "--timeout=1s",
            check=False).returncode == 0, timeout)
        return time.monotonic() - t0

    def ready(self):
        result = self.cluster.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if result.returncode:
            return False
        conditions = json.loads(result.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def make_network(self, n):
        sh("ip", "netns", "add", n["netns"])
        sh("ip", "link", "add", n["host_if"], "type", "veth", "peer", "name", n["node_if"])
        sh("ip", "link", "set", n["node_if"], "netns", n["netns"])
        sh("ip", "addr", "add", f"{n['host_ip']}/{n['prefix']}", "dev", n["host_if"])
        sh("ip", "link", "set", n["host_if"], "up")
        ns = ["ip", "netns", "exec", n["netns"]]
        sh(*ns, "ip", "addr", "add", f"{n['node_ip']}/{n['prefix']}", "dev", n["node_if"])
        sh(*ns, "ip", "link", "set", n["node_if"], "up")
        sh(*ns, "ip", "link", "set", "lo", "up")
        # Per-namespace sysctls: forwarding between the bridge and the veth, bridged pod traffic through iptables.
        for key, value in (("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1"),
                           ("net/ipv4/conf/all/rp_filter", "0")):
            sh(*ns, "sh", "-c", f"echo {value} > /proc/sys/{key}")

    def make_cgroups(self, n):
        for hierarchy in cgroup_hierarchies():
            path = hierarchy / n["cgroup"]
            path.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (path / name).exists() and not (path / name).read_text().strip():
                    (path / name).write_text((hierarchy / name).read_text())

    def write_configs(self, n):
        pki = self.cluster.pki
        d = self.dir
        for sub in ("containerd/root", "containerd/state", "cni/net.d", "cni/ipam", "kubelet", "pod-logs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        server = f"https://{n['host_ip']}:{API_FORWARD_PORT}"
        for user in ("kubelet", "kube-proxy", "kube-router"):
            self.cluster.write_kubeconfig(d / f"{user}.kubeconfig", user, server=server)
        images = json.loads((self.bin / "images.json").read_text())
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (d / "containerd.toml").write_text(f"""version = 2
root = "{d / 'containerd/root'}"
state = "{d / 'containerd/state'}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[{cri}]
  sandbox_image = "{images['pause']}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d / 'cni/net.d'}"
""")
        (d / "cni/net.d/10-matrix-stack.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "matrix-stack", "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "dataDir": str(d / "cni/ipam"), "ranges": [[{"subnet": POD_CIDR}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": True}}]}, indent=2))
        (d / "kubelet.yaml").write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": n["node_ip"], "port": 10250, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            "tlsCertFile": str(pki / "kubelet-serving.crt"), "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(pki / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs", "failCgroupV1": False, "cgroupRoot": f"/{n['cgroup']}",
            "containerRuntimeEndpoint": f"unix://{self.sock}",
            "clusterDNS": [CLUSTER_DNS], "clusterDomain": "cluster.local", "resolvConf": "",
            "podLogsDir": str(d / "pod-logs"), "failSwapOn": False,
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "registerWithTaints": [{"key": NODE_LABEL[0], "value": NODE_LABEL[1], "effect": "NoSchedule"}],
            "serializeImagePulls": False, "maxPods": 110, "shutdownGracePeriod": "0s",
            "syncFrequency": "10s", "fileCheckFrequency": "0s", "nodeStatusReportFrequency": "1m",
        }, indent=2))
        (d / "kube-proxy.yaml").write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(d / "kube-proxy.kubeconfig")},
            "hostnameOverride": NODE_NAME, "mode": "iptables", "clusterCIDR": POD_CIDR,
            "bindAddress": n["node_ip"], "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
            # 0 = leave the (machine-wide) conntrack sysctls alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": False},
        }, indent=2))

    def api_endpoints(self, n):
        """The `kubernetes` Service's endpoint: the forwarder on the host end of the node's veth."""
        endpoints = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "kubernetes", "namespace": "default"},
                     "subsets": [{"addresses": [{"ip": n["host_ip"]}],
                                  "ports": [{"name": "https", "port": API_FORWARD_PORT, "protocol": "TCP"}]}]}
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input_text=json.dumps(endpoints))

    def ctr(self, *args, check=True, timeout=120):
        return subprocess.run(["ctr", f"--address={self.sock}", "--namespace=k8s.io", *args], check=check,
                              capture_output=True, text=True, timeout=timeout)

    def import_images(self, dirs):
        """Import the node's own images and every archive (*.tar) found in dirs into containerd's k8s.io namespace."""
        archives = sorted((self.bin / "images").glob("*.tar"))
        for directory in dirs:
            archives += sorted(Path(directory).glob("*.tar")) if Path(directory).is_dir() else []
        # containerd's root survives `up` (see keep_image_store): an archive already imported is skipped.
        record_path = self.dir / "containerd" / "root" / "matrix-stack-imported.json"
        record = json.loads(record_path.read_text()) if record_path.exists() else {}
        present = set(self.ctr("images", "ls", "-q").stdout.split())
        imported = []
        for archive in archives:
            stat = Path(archive).stat()
            key = f"{Path(archive).resolve()} {stat.st_size} {stat.st_mtime_ns}"
            names = record.get(key)
            if names and set(names) <= present:
                continue
            before = present
            result = self.ctr("images", "import", "--no-unpack=false", str(archive), check=False, timeout=900)
            if result.returncode:
                raise RuntimeError(f"ctr images import {archive} failed: {result.stderr.strip()}")
            present = set(self.ctr("images", "ls", "-q").stdout.split())
            record[key] = sorted(n for n in present - before if not n.startswith("sha256:")) or sorted(present)
            imported.append(archive)
        record_path.write_text(json.dumps(record, indent=1))
        return imported

    def keep_image_store(self):
        """Move containerd's root (imported and unpacked images) out of the way of `up`'s fresh cluster directory."""
        root = self.dir / "containerd" / "root"
        if not root.is_dir() or mounts_under(root):
            return None
        kept = self.cluster.dir.parent / f".{self.cluster.dir.name}-containerd-root"
        shutil.rmtree(kept, ignore_errors=True)
        root.rename(kept)
        return kept

    def restore_image_store(self, kept):
        if kept:
            (self.dir / "containerd").mkdir(parents=True, exist_ok=True)
            kept.rename(self.dir / "containerd" / "root")

    def forget_containers(self):
        """Remove every container and pod sandbox a previous run left in the kept containerd store (images stay)."""
        for cid in self.ctr("containers", "ls", "-q").stdout.split():
            self.ctr("tasks", "rm", "-f", cid, check=False)
            self.ctr("containers", "rm", cid, check=False)

    def dns_objects(self):
        images = json.loads((self.bin / "images.json").read_text())
        labels = {"k8s-app": "kube-dns"}
        corefile = """.:53 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    cache 30
    reload
}
"""
        restricted = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}}
        items = [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": "kube-system"}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:coredns"},
             "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                        "verbs": ["list", "watch"]},
                       {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "system:coredns"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
             "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"},
             "data": {"Corefile": corefile}},
            {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
             "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                 "metadata": {"labels": labels},
                 "spec": {
                     "serviceAccountName": "coredns", "dnsPolicy": "Default", "priorityClassName": "system-cluster-critical",
                     "nodeSelector": {NODE_LABEL[0]: NODE_LABEL[1]},
                     "tolerations": [{"key": NODE_LABEL[0], "operator": "Equal", "value": NODE_LABEL[1],
                                      "effect": "NoSchedule"}],
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                         "seccompProfile": {"type": "RuntimeDefault"},
                                         "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}]},
                     "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                     "containers": [{
                         "name": "coredns", "image": images["coredns"], "imagePullPolicy": "Never",
                         "args": ["-conf", "/etc/coredns/Corefile"],
                         "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
                         "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                   {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}],
                         "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 1},
                         "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10},
                         "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                         "securityContext": restricted}]}}}},
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
             "spec": {"clusterIP": CLUSTER_DNS, "selector": labels, "ports": [
                 {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                 {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}},
        ]
        return {"apiVersion": "v1", "kind": "List", "items": items}

    # ----- machine-wide changes, shared by every real node on the machine ----
    def hold_machine(self):
        """Record (once per machine) the host sysctls the kubelet sets and which fixed paths exist, and register
        this node as a holder: the last holder to stop puts them back."""
        MACHINE_STATE.mkdir(parents=True, exist_ok=True)
        path = MACHINE_STATE / "machine.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        if not record.get("holders"):
            record = {"sysctls": {k: Path("/proc/sys", k).read_text().strip() for k in KUBELET_SYSCTLS},
                      "paths": [p for p in HOST_PATHS if os.path.lexists(p)],
                      "netns_mounted": "/run/netns" in mounts_under("/run/netns"), "holders": []}
        if str(self.cluster.dir) not in record["holders"]:
            record["holders"].append(str(self.cluster.dir))
        path.write_text(json.dumps(record, indent=2))

    def release_machine(self):
        """Drop this node (and holders whose kubelet is gone); when none is left, restore what hold_machine saw."""
        path = MACHINE_STATE / "machine.json"
        if not path.exists():
            return
        record = json.loads(path.read_text())

        def alive(holder):
            if holder == str(self.cluster.dir):
                return False
            try:
                state = json.loads((Path(holder) / "state.json").read_text())
            except (OSError, ValueError):
                return False
            pid = state.get("pids", {}).get("kubelet")
            return bool(pid) and pid_alive(pid)

        record["holders"] = [h for h in record.get("holders", []) if alive(h)]
        if record["holders"]:
            path.write_text(json.dumps(record, indent=2))
            return
        for key, value in record.get("sysctls", {}).items():
            try:
                Path("/proc/sys", key).write_text(value)
            except OSError:
                pass
        # The kubelet's device-plugin socket lives at the fixed /var/lib/kubelet/device-plugins.
        if "/var/lib/kubelet" not in record.get("paths", []):
            shutil.rmtree("/var/lib/kubelet", ignore_errors=True)
        if "/var/lib/cni" not in record.get("paths", []):
            for cni_dir in (CNI_CACHE, CNI_CACHE.parent):
                try:
                    cni_dir.rmdir()
                except OSError:
                    pass
        netns = Path("/run/netns")
        if netns.is_dir() and not any(netns.iterdir()):
            if not record.get("netns_mounted"):
                subprocess.run(["umount", str(netns)], check=False, capture_output=True)
            if str(netns) not in record.get("paths", []):
                netns.rmdir()
        path.unlink()
        try:
            MACHINE_STATE.rmdir()
        except OSError:
            pass

    # ----- stop --------------------------------------------------------
    def stop(self, quiet=False, api_up=True):
        """Undo everything start did, in reverse; safe to run on a half-started or killed node."""
        state = self.cluster.state()
        if "real_node" not in state:
            return
        n = self.names()
        pids = state.get("pids", {})
        if api_up and pid_alive(pids.get("kubelet") or 0) and pid_alive(pids.get("kube-apiserver") or 0):
            self.drain(quiet)
        for name in ("kube-router", "kube-proxy", "kubelet"):
            kill_pids([pids.get(name)])
        # Containers first (every process in the node's cgroups), then the shims, then containerd.
        kill_pids(self.cgroup_pids(n), grace=5)
        kill_pids(self.shim_pids(), grace=5)
        kill_pids([pids.get("containerd"), pids.get("apiproxy")])
        kill_pids(self.cgroup_pids(n), grace=2)
        for point in mounts_under(self.dir):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        sandboxes = self.dir / "containerd" / "root" / "io.containerd.grpc.v1.cri" / "sandboxes"
        for sandbox in sandboxes.iterdir() if sandboxes.is_dir() else ():
            for cached in CNI_CACHE.glob(f"*-{sandbox.name}-*"):
                cached.unlink()
        subprocess.run(["ip", "netns", "del", n["netns"]], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", n["host_if"]], check=False, capture_output=True)
        self.remove_cgroups(n)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.release_machine()
        # The kubelet links every container's log into the fixed /var/log/containers.
        logs = Path("/var/log/containers")
        if logs.is_dir():
            for link in logs.iterdir():
                if link.is_symlink() and os.readlink(link).startswith(str(self.dir)):
                    link.unlink()
        for leftover in (Path("/run/containerd/s"), Path("/run/containerd"), logs):
            try:
                leftover.rmdir()  # only if empty, i.e. nothing else on the machine uses it
            except OSError:
                pass
        state = self.cluster.state()
        state.pop("real_node", None)
        self.cluster.save_state(state)

    def drain(self, quiet):
        """Delete the node's pods through the API (the kubelet stops them gracefully) before anything is killed."""
        if not quiet:
            self.cluster.log("deleting the real node's pods")
        self.cluster.kubectl("patch", "node", NODE_NAME, "-p", '{"spec":{"unschedulable":true}}', check=False)
        selector = f"spec.nodeName={NODE_NAME}"
        self.cluster.kubectl("delete", "pods", "--all-namespaces", f"--field-selector={selector}",
                             "--grace-period=2", "--wait=false", check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            result = self.cluster.kubectl("get", "pods", "--all-namespaces", f"--field-selector={selector}",
                                          "-o", "name", check=False)
            if result.returncode == 0 and not result.stdout.strip():
                break
            time.sleep(0.5)

    def cgroup_pids(self, n):
        pids = set()
        for hierarchy in cgroup_hierarchies():
            root = hierarchy / n["cgroup"]
            if root.is_dir():
                for procs in root.rglob("cgroup.procs"):
                    try:
                        pids.update(int(p) for p in procs.read_text().split())
                    except OSError:
                        pass
        return sorted(pids)

    def shim_pids(self):
        """The shims of this node's containerd, found by its socket on their command line (a pid file would miss a
        shim whose task already ended: such shims outlived `down`)."""
        needle = f"\0-address\0{self.sock}\0".encode()
        pids = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"containerd-shim" in cmdline.split(b"\0", 1)[0] and needle in cmdline + b"\0":
                    pids.append(int(proc.name))
        return pids

    @staticmethod
    def remove_cgroups(n):
        for hierarchy in cgroup_hierarchies():
            root = hierarchy / n["cgroup"]
            if not root.is_dir():
                continue
            for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                try:
                    path.rmdir()
                except OSError:
                    pass
            try:
                root.rmdir()
            except OSError:
                pass


def forward(listen, target):
    """A plain TCP forwarder (the API server's TLS passes through): pods and the node reach 127.0.0.1 this way."""
    host, port = listen.rsplit(":", 1)
    target_host, target_port = target.rsplit(":", 1)
    server = socket.create_server((host, int(port)), reuse_port=False)

    def pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    while True:
        client, _peer = server.accept()
        try:
            upstream = socket.create_connection((target_host, int(target_port)), timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()


# Host sysctls compared by the restore test: the kubelet's, and the network ones a careless node would flip.
SNAPSHOT_SYSCTLS = (*KUBELET_SYSCTLS, "net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet",
                    "net/bridge/bridge-nf-call-iptables", "net/ipv4/conf/all/rp_filter",
                    "net/netfilter/nf_conntrack_max")

# Default locations of the node's programs; ours are configured elsewhere, so none may appear.
WELL_KNOWN_PATHS = ("/var/lib/kubelet", "/var/lib/containerd", "/run/containerd", "/var/log/containers", "/var/log/pods",
                    "/var/lib/cni", "/etc/cni/net.d", "/run/netns", "/var/lib/kube-router", "/run/kubelet",
                    "/etc/kubernetes", "/opt/containerd", "/run/flannel", "/var/run/kube-router")


def machine_snapshot():
    """What a real node could leave behind on the host, as {aspect: sorted lines}: compare before up and after down."""
    def lines(*argv):
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except FileNotFoundError:
            return [f"{argv[0]}: not installed"]
        return result.stdout.splitlines()

    def strip_counters(rules):
        return [line.split(" [", 1)[0] if line.startswith(":") else line
                for line in rules if not line.startswith("#")]

    snapshot = {
        "ip link": [line.split(":", 2)[1].strip().split("@")[0] for line in lines("ip", "-o", "link", "show")],
        "ip addr": [" ".join(line.split()[1:4]) for line in lines("ip", "-o", "addr", "show")],
        "ip route": lines("ip", "route", "show", "table", "all"),
        "iptables-save": strip_counters(lines("iptables-save")),
        "ip6tables-save": strip_counters(lines("ip6tables-save")),
        "nft list ruleset": lines("nft", "list", "ruleset"),
        "ipset list -n": lines("ipset", "list", "-n"),
        "ip netns": lines("ip", "netns", "list"),
        "mounts": [" ".join(line.split()[1:3]) for line in Path("/proc/self/mounts").read_text().splitlines()],
        "cgroups": [str(p) for h in cgroup_hierarchies() for p in h.iterdir() if p.is_dir()],
        "paths": [f"{p} exists" for p in WELL_KNOWN_PATHS if os.path.lexists(p)]
        + [str(p) for d in ("/var/log/containers", CNI_CACHE, "/var/lib/kubelet") for p in Path(d).glob("*")],
        "sysctls": [f"{k}={Path('/proc/sys', k).read_text().strip()}" for k in SNAPSHOT_SYSCTLS
                    if Path("/proc/sys", k).exists()],
    }
    return {aspect: sorted(set(values)) for aspect, values in snapshot.items()}
