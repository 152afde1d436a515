"""Run the rendered Synapse Deployment's containers as local processes, on loopback.

The pod's mounts (/config, /secrets, /run/synapse, /data, /tmp) become directories under a temporary
root; the init container's command (compose_secrets.py from the ConfigMap, rendered arguments) and
then the main container's command line and environment run with the Synapse venv's Python. Only what
cannot be the same outside a pod is changed by the caller (listeners, database address).
"""

import os
import subprocess
import urllib.request
from pathlib import Path

import yaml

from helpers.services import SYNAPSE_PYTHON, free_port, stop_pid, wait_until


class Pod:
    """The Synapse pod's filesystem layout under a temporary root."""

    def __init__(self, root, deployment, configmap):
        self.root = Path(root)
        self.mounts = {"/config": self.root / "config", "/secrets": self.root / "secrets",
                       "/run/synapse": self.root / "run", "/data": self.root / "data", "/tmp": self.root / "tmp"}
        for path in self.mounts.values():
            path.mkdir(parents=True, exist_ok=True)
        self.spec = deployment["spec"]["template"]["spec"]
        self.configmap = configmap
        self.proc = None
        self.port = None
        self.config = {}
        self.log = self.root / "synapse.stdout"

    def local(self, value):
        if "=" in value and not value.startswith("/"):  # --inject dotted.key=/path
            key, _sep, path = value.partition("=")
            return f"{key}={self.local(path)}"
        for mount, local in self.mounts.items():
            if value == mount or value.startswith(mount + "/"):
                return str(local) + value[len(mount):]
        return value

    def write_secret(self, relative, value, mode=0o440):
        path = self.mounts["/secrets"] / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(value if isinstance(value, bytes) else value.encode())
        path.chmod(mode)
        return path

    def write_config(self, adjust=None):
        """homeserver.yaml with listeners on free loopback ports, then adjust(config); other ConfigMap files as is."""
        config = yaml.safe_load(self.configmap["data"]["homeserver.yaml"])
        self.port = free_port()
        for listener in config["listeners"]:
            listener["bind_addresses"] = ["127.0.0.1"]
            listener["port"] = self.port if listener["type"] == "http" else free_port()
        if adjust:
            adjust(config)
        self.config = config
        text = yaml.safe_dump(config, sort_keys=False)
        for mount in ("/config", "/secrets", "/run/synapse", "/data"):
            text = text.replace(f": {mount}/", f": {self.mounts[mount]}/")
        (self.mounts["/config"] / "homeserver.yaml").write_text(text)
        for key, value in self.configmap["data"].items():
            if key != "homeserver.yaml":
                (self.mounts["/config"] / key).write_text(value)
        return config

    def argv(self, container):
        argv = [str(SYNAPSE_PYTHON) if arg == "python" else self.local(arg)
                for arg in container["command"] + container.get("args", [])]
        if "--wait-for-postgres" in argv:
            # The database the caller pointed homeserver.yaml at (write_config), not the in-cluster Service.
            at = argv.index("--wait-for-postgres")
            db = (self.config.get("database") or {}).get("args") or {}
            argv[at + 1:at + 5] = [str(db.get("host", "127.0.0.1")), str(db.get("port", 5432)), str(db.get("user")),
                                   str(db.get("dbname", db.get("database")))]
        return argv

    def run_init(self):
        for init in self.spec.get("initContainers", []):
            subprocess.run(self.argv(init), check=True, capture_output=True, timeout=60)

    def env(self, extra_env=None):
        container = self.spec["containers"][0]
        env = {**os.environ, **{e["name"]: self.local(e["value"]) for e in container.get("env", [])}, **(extra_env or {})}
        env.pop("PGPASSWORD", None)
        return env

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def healthy(self):
        try:
            with urllib.request.urlopen(self.base_url + "/health", timeout=2) as resp:
                return resp.status == 200 and resp.read() == b"OK"
        except OSError:
            return False

    def start(self, extra_env=None):
        """Start the main container's command (after the init container); returns without waiting."""
        self.run_init()
        with open(self.log, "wb") as out:
            # pylint: disable-next=consider-using-with
            self.proc = subprocess.Popen(self.argv(self.spec["containers"][0]), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env(extra_env), cwd=self.mounts["/tmp"])
        return self

    def wait_healthy(self, timeout=180):
        wait_until("rendered Synapse /health", self.healthy, timeout, self.proc, self.log)
        return self

    def stop(self):
        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc = None


def secret_generators():
    """matrix.stack.matrix_secret's generators (plugins/module_utils/secrets/generators.py), as text."""
    import importlib.util  # pylint: disable=import-outside-toplevel
    path = Path(__file__).resolve().parents[2] / "plugins" / "module_utils" / "secrets" / "generators.py"
    spec = importlib.util.spec_from_file_location("matrix_stack_secret_generators", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def generate(ktype, length=None):
        value = module.generate(ktype, length)
        return value.decode() if isinstance(value, bytes) else value
    return generate


def write_synapse_secrets(pod, generate):
    """The generated Synapse Secret's keys as the pod mounts them; returns the registration shared secret."""
    pod.write_secret("synapse/signing.key", generate("signing_key"))
    for key in ("macaroon_secret_key", "registration_shared_secret", "form_secret"):
        pod.write_secret(f"synapse/{key}", generate("alnum", 64))
    (pod.mounts["/secrets"] / "old-signing-keys").mkdir(exist_ok=True)  # optional key absent: empty directory
    return (pod.mounts["/secrets"] / "synapse/registration_shared_secret").read_text()
