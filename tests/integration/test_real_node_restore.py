"""`scripts/cluster down` leaves the machine as `up` found it, and `up` clears what a killed run left.

A second cluster (its own directory, its own real node) runs a pod, then goes down; the host's links,
addresses, routes, iptables/nft rules, ipsets, network namespaces, mounts, cgroups and sysctls are compared
with a snapshot taken before (the same snapshot as `scripts/cluster snapshot`). Entries of other clusters
that may be running on the machine meanwhile (other real-node slots) are left out of the comparison.
"""

import json
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from conftest import localcluster

realnode = localcluster.realnode
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("real-node")]


PER_POD_PATHS = (str(realnode.CNI_CACHE), "/var/log/containers/")


def without_other_clusters(snapshot, index, directory, ids):
    """Leave out what belongs to other clusters: their slots, their mounts, per-pod files of pods not ours."""
    other = re.compile(r"(msnode|matrix-stack-)(\d+)")
    kept = {}
    for aspect, lines in snapshot.items():
        out = []
        for line in lines:
            if any(int(m.group(2)) != index for m in other.finditer(line)):
                continue
            if aspect == "mounts" and "/node/" in line and str(directory) not in line:
                continue
            if line.startswith(PER_POD_PATHS) and not any(i in line for i in ids):
                continue
            out.append(line)
        kept[aspect] = out
    return kept


def diff(before, after):
    problems = {}
    for aspect in before:
        added = sorted(set(after[aspect]) - set(before[aspect]))
        removed = sorted(set(before[aspect]) - set(after[aspect]))
        if added or removed:
            problems[aspect] = {"left behind": added, "gone": removed}
    return problems


def pod_ids(cluster):
    """IDs of the sandboxes and containers of this cluster's node (they name its per-pod files on the host)."""
    cri = cluster.node.dir / "containerd" / "root" / "io.containerd.grpc.v1.cri"
    return {p.name for kind in ("sandboxes", "containers") if (cri / kind).is_dir() for p in (cri / kind).iterdir()}


def run_pod(cluster):
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "restore", "annotations": localcluster.REAL_NODE_NAMESPACE_ANNOTATIONS,
        "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    cluster.kubectl("apply", "-f", "-", input_text=json.dumps(ns))
    cluster.wait_for("the default ServiceAccount", lambda: cluster.kubectl(
        "get", "serviceaccount", "default", "-n", "restore", check=False).returncode == 0, 60)
    image = json.loads((localcluster.NODE_BIN / "images.json").read_text())["probe"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "restore"}, "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
        "containers": [{"name": "p", "image": image, "imagePullPolicy": "Never", "args": ["listen", "tcp:8080"],
                        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}
    cluster.kubectl("apply", "-f", "-", input_text=json.dumps(pod))
    cluster.kubectl("wait", "-n", "restore", "--for=condition=Ready", "pod/p", "--timeout=60s")


@pytest.fixture
def short_dir():
    """The second cluster's directory, with a short path: the kubelet's unix sockets under it must stay within the
    108 bytes of sun_path (a deep pytest tmp_path, e.g. /tmp/pytest-of-root/pytest-135/test_down_..., does not)."""
    path = Path(tempfile.mkdtemp(prefix="msr-", dir="/tmp"))
    try:
        yield path
    finally:
        mounted = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                   if line.split()[1].startswith(str(path) + "/")]
        if not mounted:  # left as it is otherwise (the test reports what `down` left behind)
            shutil.rmtree(path, ignore_errors=True)


def test_down_restores_the_machine_and_up_clears_a_killed_run(short_dir):
    tmp_path = short_dir
    reason = realnode.unavailable_reason(localcluster.NODE_BIN)
    assert reason is None, f"this machine cannot run the real node: {reason}"
    before = realnode.machine_snapshot()
    cluster = localcluster.Cluster(tmp_path / "cluster", images_dirs=())  # the node's own images suffice
    try:
        # A run killed with its pods running: every process gone at once, nothing cleaned.
        cluster.up(timeout=120, real_node=True)
        run_pod(cluster)
        index = cluster.node.index
        ids = pod_ids(cluster)
        # The snapshot sees a running node (so the comparison below can fail): its link, address, namespace,
        # cgroups and mounts are all there.
        seen = diff(without_other_clusters(before, index, tmp_path, pod_ids(cluster)),
                    without_other_clusters(realnode.machine_snapshot(), index, tmp_path, pod_ids(cluster)))
        for aspect in ("ip link", "ip addr", "ip netns", "cgroups", "mounts", "paths"):
            assert seen.get(aspect, {}).get("left behind"), (aspect, seen)
        killed = list(cluster.state()["pids"].values()) + cluster.node.shim_pids()
        killed += cluster.node.cgroup_pids(cluster.node.names())
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # The next `up` finds the leftovers and clears them before starting again; then a clean `down`.
        cluster.up(timeout=120, real_node=True)
        assert cluster.node.index == index
        run_pod(cluster)
        ids |= pod_ids(cluster)
        assert ids
    finally:
        cluster.down()
    after = realnode.machine_snapshot()
    problems = diff(without_other_clusters(before, index, tmp_path, ids),
                    without_other_clusters(after, index, tmp_path, ids))
    assert not problems, json.dumps(problems, indent=1)
