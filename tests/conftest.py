"""Session fixtures that start real services (Kubernetes, PostgreSQL, Synapse, coturn) on loopback.

Each fixture stops exactly the processes it started, by PID, even when tests fail.
"""

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".work"
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

# Ansible's collection loader, as ansible-playbook installs it: the collection's own filter and lookup plugins
# (matrix.stack.*) then resolve in the tests that template in process. It leaves the process in module mode.
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder  # noqa: E402  pylint: disable=wrong-import-position

_AnsibleCollectionFinder(paths=[str(WORK / "collections")])._install()  # pylint: disable=protected-access

# pylint: disable=wrong-import-position
import localcluster  # noqa: E402
from helpers.services import MINIO, CoturnServer, MinioServer, PostgresServer, SynapseServer  # noqa: E402

VENV_BIN = WORK / "venv" / "bin"
COLLECTIONS_PATH = WORK / "collections"
# The compiled-template cache of matrix.stack.manifests (plugin_utils/_template_cache.py) in the checkout, not in
# the machine's temporary directory; every playbook the tests start inherits it.
os.environ.setdefault("MATRIX_STACK_TEMPLATE_CACHE", str(WORK / "template-cache"))


@pytest.hookimpl(tryfirst=True)  # before xdist's, which names each test's group in its node id
def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
    """Mark the integration tests; give every test an xdist group (scripts/test runs two workers).

    A module is one group: its module fixtures start once, on one worker. Modules that share a machine-wide
    resource name one group in their marks: "real-node" for every module whose pods really run on the real node
    (two stacks starting there at once on two cores made Synapse's pod restart once). The groups marked `slow`
    are queued first, so that the two workers finish together.
    """
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# ----- Kubernetes -------------------------------------------------------------------------------

class KubeCluster:
    def __init__(self, cluster):
        self.cluster = cluster
        self.kubeconfig = str(cluster.kubeconfig)

    def kubectl(self, *args, input=None, check=True):  # pylint: disable=redefined-builtin
        return subprocess.run([str(localcluster.BIN / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                              input=input, check=check, capture_output=True, text=True, timeout=300)

    def api_client(self):
        from kubernetes import config  # pylint: disable=import-outside-toplevel
        return config.new_client_from_config(config_file=self.kubeconfig)


@pytest.fixture(scope="session")
def kube_cluster():
    cluster = localcluster.Cluster()
    started_here = not cluster.running()
    if started_here:
        cluster.up()
    else:
        cluster.wait(60)
    try:
        yield KubeCluster(cluster)
    finally:
        if started_here:
            cluster.down()


@pytest.fixture
def kube_namespace(kube_cluster):
    created = []

    def make(restricted=True, prefix="t", annotations=None):
        name = f"{prefix}-{secrets.token_hex(4)}"
        labels = {}
        if restricted:
            labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
        manifest = {"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": labels, "annotations": annotations or {}}}
        kube_cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
        created.append(name)
        # Pods are refused until the controller-manager has made the namespace's default ServiceAccount,
        # and controllers then back off for many seconds: wait for it, as a real cluster user would not notice.
        kube_cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s")
        return name

    yield make
    for name in created:
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def real_node_namespace(kube_cluster, kube_namespace):
    """Like kube_namespace (restricted), but the API server places its pods on the real node, where they really run.

    Fails (never skips) when the cluster has no real node: scripts/cluster up says why it started without one.
    """
    node = kube_cluster.kubectl("get", "node", localcluster.REAL_NODE_NAME, check=False)
    if node.returncode:
        pytest.fail(f"the local cluster has no real node ({node.stderr.strip()}); see the `scripts/cluster up` output "
                    f"for the reason (root, scripts/setup) and {kube_cluster.cluster.logs}")

    def make(restricted=True, prefix="rn"):
        return kube_namespace(restricted=restricted, prefix=prefix,
                              annotations=localcluster.REAL_NODE_NAMESPACE_ANNOTATIONS)

    return make


# ----- PostgreSQL, Synapse, coturn --------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def synapse_factory(postgres_server, tmp_path_factory):
    started = []

    def make(server_name="test.local", extra_config=None, database="postgres", start=True, extra_args=()):
        root = tmp_path_factory.mktemp("synapse")
        server = SynapseServer(server_name, root, postgres=postgres_server, database=database,
                               extra_config=extra_config)
        started.append(server)
        if start:
            server.start(extra_args=extra_args)
        return server

    yield make
    for server in started:
        server.destroy()


@pytest.fixture(scope="session")
def synapse_server(synapse_factory):
    return synapse_factory(server_name="test.local")


@pytest.fixture(scope="session")
def coturn_factory():
    started = []

    def make(config_text, relay_ports=(49160, 49200)):
        root = Path(tempfile.mkdtemp(prefix="matrix-stack-coturn-"))
        server = CoturnServer(config_text, root, relay_ports=relay_ports)
        started.append((server, root))
        return server.start()

    yield make
    for server, root in started:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def minio_server(tmp_path_factory):
    """A real S3-compatible object store (MinIO) on loopback with one empty bucket, "backups"."""
    if not MINIO.exists():
        pytest.fail(f"{MINIO} is missing: run scripts/setup (make setup)")
    server = MinioServer(tmp_path_factory.mktemp("minio")).start()
    try:
        server.client().create_bucket(Bucket="backups")
        yield server
    finally:
        server.stop()


# ----- Ansible ----------------------------------------------------------------------------------

RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")


@dataclass
class PlaybookResult:
    rc: int
    stdout: str
    stderr: str
    stats: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)

    def changed(self, host="localhost"):
        return self.stats[host]["changed"]


def ansible_env(extra=None):
    env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_PATH),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        # The modules run on the controller: use the venv's interpreter, not whatever discovery finds first.
        "ANSIBLE_PYTHON_INTERPRETER": str(VENV_BIN / "python"),
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
    }
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def run_playbook():
    """Run a playbook with the venv's ansible-playbook; `.stats` is the parsed PLAY RECAP.

    With json_output=True the ansible.posix.json callback is used and `.results` holds its document.
    """

    def run(playbook, extra_vars=None, inventory=None, check=False, diff=False, verbosity=0, env=None,
            json_output=False, timeout=1800):
        argv = [str(VENV_BIN / "ansible-playbook"), str(playbook)]
        argv += ["-i", str(inventory)] if inventory else ["-i", "localhost,", "-c", "local"]
        if extra_vars:
            argv += ["-e", json.dumps(extra_vars)]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        if verbosity:
            argv.append("-" + "v" * verbosity)
        extra_env = dict(env or {})
        if json_output:
            extra_env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
        proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(extra_env), cwd=REPO,
                              timeout=timeout, check=False)
        result = PlaybookResult(proc.returncode, proc.stdout, proc.stderr)
        if json_output:
            try:
                result.results = json.loads(proc.stdout)
                result.stats = result.results.get("stats", {})
            except json.JSONDecodeError:
                pass
        else:
            for line in proc.stdout.splitlines():
                match = RECAP.match(line.strip())
                if match:
                    result.stats[match["host"]] = {
                        key: int(value) for key, value in (pair.split("=") for pair in match["counts"].split())}
        return result

    return run
