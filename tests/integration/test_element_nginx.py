"""Element's nginx for real: Debian's nginx runs the rendered nginx.conf the way the Deployment runs it.

site.yml renders the minimal inventory (Element at its defaults, plus one extra security header whose value
holds the characters nginx treats specially: quotes, a backslash and "$"). The pod's filesystem is laid out
under a temporary root: the ConfigMap's nginx.conf and config.json and a stand-in for the image's /app are
owned by root and read-only; /tmp is the pod's only writable emptyDir (mode 0777 like an emptyDir). nginx starts
as the Deployment's UID/GID (non-root) with the image's command line (`nginx -g 'daemon off;'`), its stdout
handed over to that user as the container runtime does, and serves on 127.0.0.1:
- config.json points at the homeserver Synapse's rendered configuration names, is never cached, and keeps
  Element Call off (element_call.disable, no MatrixRTC backend in this stack);
- every header of element_security_headers, with its exact value, on every kind of answer (entry point, config,
  static file, health, 404);
- a missing config.<host>.json is a 404 (Element falls back to config.json), not index.html;
- nginx wrote only under /tmp (pid file, temp directories), ran as the non-root UID, and the version is hidden.
Only the mount roots and the listen address change (127.0.0.1 and a free port instead of 0.0.0.0:8080).
"""

import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from helpers.rendered import REAL_PROGRAMS_VARS, first, render_stack
from helpers.services import free_port, stop_pid, wait_until

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def element_objects(objects):
    def pick(kind, suffix):
        return next(obj for (k, name), obj in objects.items() if k == kind and name.endswith(suffix))
    return pick("ConfigMap", "-element"), pick("Deployment", "-element"), pick("ConfigMap", "-synapse")


@pytest.fixture(scope="module")
def element_pod(run_playbook):
    if not Path(NGINX).exists():
        pytest.fail("nginx is missing: run scripts/setup (Debian package nginx-light)")
    objects = render_stack(run_playbook, extra_vars=REAL_PROGRAMS_VARS)
    configmap, deployment, synapse = element_objects(objects)
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    uid, gid = spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]
    assert uid != 0 and container["securityContext"]["readOnlyRootFilesystem"] is True

    root = Path(tempfile.mkdtemp(prefix="matrix-stack-element-"))
    root.chmod(0o755)
    proc = None
    try:
        # Mounts: ConfigMap files (read-only), emptyDirs (writable). Nothing else is writable for nginx.
        mounts = {}
        for mount in container["volumeMounts"]:
            volume = first(v for v in spec["volumes"] if v["name"] == mount["name"])
            local = root / mount["mountPath"].lstrip("/")
            if "configMap" in volume:
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_text(configmap["data"][mount["subPath"]])
                local.chmod(volume["configMap"]["defaultMode"])
                assert mount.get("readOnly") is True, mount
            else:
                assert "emptyDir" in volume, volume
                local.mkdir(parents=True, exist_ok=True)
                local.chmod(0o777 if not mount.get("readOnly") else 0o555)
            mounts[mount["mountPath"]] = local
        writable = [path for mount_path, path in mounts.items() if path.is_dir() and path.stat().st_mode & 0o002]
        assert [p.name for p in writable] == ["tmp"], mounts
        # The image's web root (read-only): the entry point, a bundle, a translation, the version file.
        app = mounts["/app/config.json"].parent
        (app / "bundles" / "0123abcd").mkdir(parents=True)
        (app / "i18n").mkdir()
        (app / "index.html").write_text("<!doctype html><title>Element</title><script src='bundles/0123abcd/app.js'></script>\n")
        (app / "bundles" / "0123abcd" / "app.js").write_text("console.log('element');\n" * 200)
        (app / "i18n" / "en_EN.json").write_text('{"Welcome": "Welcome"}\n')
        (app / "version").write_text("1.12.30\n")
        for path in [app, *app.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)

        # The rendered nginx.conf with the pod's paths mapped under root, listening on loopback only.
        conf_path = mounts["/etc/nginx/nginx.conf"]
        text = conf_path.read_text()
        port_match = re.search(r"^\s*listen (\d+);$", text, re.MULTILINE)
        assert port_match and int(port_match.group(1)) == container["ports"][0]["containerPort"]
        port = free_port()
        text = text.replace(port_match.group(0), f"        listen 127.0.0.1:{port};")
        text = re.sub(r"(?<=[\s\"])/tmp/", str(mounts["/tmp"]) + "/", text)
        text = text.replace("root /app;", f"root {app};")
        assert not re.search(r"[\s\"](/tmp/|/app[;/])", text.replace(str(root), "<root>")), text
        conf_path.chmod(0o644)
        conf_path.write_text(text)
        conf_path.chmod(0o444)

        # stdout/stderr: the runtime hands the container's stdio to its user (access_log /dev/stdout reopens it).
        log = root / "nginx.out"
        log.touch()
        os.chown(log, uid, gid)
        with open(log, "ab") as out:
            # pylint: disable-next=consider-using-with
            proc = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", NGINX,
                                     "-c", str(conf_path), "-g", "daemon off;"],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def listening():
            with socket.socket() as sock:
                sock.settimeout(0.5)
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_until("nginx to listen", listening, 30, proc, log)
        yield {"url": f"http://127.0.0.1:{port}", "root": root, "mounts": mounts, "app": app, "log": log,
               "pid": proc.pid, "uid": uid, "configmap": configmap, "synapse": synapse}
    finally:
        if proc is not None:
            stop_pid(proc.pid)
        shutil.rmtree(root, ignore_errors=True)


def fetch(url, headers=None):
    """(status, headers, body) of a GET; error statuses too."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def promised_headers():
    """element_security_headers as this rendering sets them: the role's defaults plus the test's extra."""
    defaults = yaml.safe_load((REPO / "roles" / "element" / "defaults" / "main.yml").read_text())
    promised = REAL_PROGRAMS_VARS["element_security_headers"]
    assert promised.items() > defaults["element_security_headers"].items(), "every default header, unchanged"
    return promised


def test_config_json_points_at_the_homeserver(element_pod):
    status, headers, body = fetch(element_pod["url"] + "/config.json?cachebuster=1")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-cache"
    config = json.loads(body)
    synapse = yaml.safe_load(element_pod["synapse"]["data"]["homeserver.yaml"])
    assert config["default_server_config"]["m.homeserver"] == {"base_url": synapse["public_baseurl"],
                                                               "server_name": synapse["server_name"]}
    assert config == json.loads(element_pod["configmap"]["data"]["config.json"])
    assert config["element_call"] == {"disable": True}


def test_security_headers_on_every_answer(element_pod):
    promised = promised_headers()
    paths = {"/": 200, "/index.html": 200, "/config.json": 200, "/bundles/0123abcd/app.js": 200,
             "/i18n/en_EN.json": 200, "/version": 200, "/health": 200, "/no-such-file": 404,
             "/config.element.test.local.json": 404}
    for path, want in paths.items():
        status, headers, body = fetch(element_pod["url"] + path)
        assert status == want, (path, status, body[:200])
        for name, value in promised.items():
            assert headers.get(name) == value, (path, name, headers.get(name))
        assert headers["Server"] == "nginx", (path, headers["Server"])  # no version
        if path in ("/", "/index.html", "/config.json", "/i18n/en_EN.json", "/version"):
            assert headers["Cache-Control"] == "no-cache", path
        if path.startswith("/config."):
            assert b"<title>Element</title>" not in body  # not index.html
    status, _headers, body = fetch(element_pod["url"] + "/")
    assert body.startswith(b"<!doctype html><title>Element</title>")


def test_static_files_compressed(element_pod):
    status, headers, body = fetch(element_pod["url"] + "/bundles/0123abcd/app.js", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == (element_pod["app"] / "bundles" / "0123abcd" / "app.js").read_bytes()


def test_nginx_non_root_writes_only_tmp(element_pod):
    status = Path(f"/proc/{element_pod['pid']}/status").read_text()
    assert re.search(rf"^Uid:\s+{element_pod['uid']}\s", status, re.MULTILINE), status
    tmp = element_pod["mounts"]["/tmp"]
    assert (tmp / "nginx.pid").read_text().strip().isdigit()
    assert {"client_temp", "proxy_temp"} <= {p.name for p in tmp.iterdir()}
    owned = [p for p in element_pod["root"].rglob("*") if p.stat().st_uid == element_pod["uid"]
             and not p.is_relative_to(tmp) and p != element_pod["log"]]
    assert not owned, owned
    assert "[emerg]" not in element_pod["log"].read_text() and "[alert]" not in element_pod["log"].read_text()
