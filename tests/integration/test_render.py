"""Render mode: playbooks/site.yml writes manifests instead of applying them.

The stack is rendered with four inventories (minimal, everything on, external PostgreSQL,
SSO only) and every manifest is checked:
- kubernetes-validate --strict against the oldest and newest Kubernetes we support,
- checkov with the repository's .checkov.yml, one run per directory: every object scanned, 0 failed checks,
- our own invariants: PSS restricted fields, resources, common labels, no secret in any
  ConfigMap, the admin API never routed, no secret value anywhere in the output.
"""

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from helpers.gates import assert_checkov_clean, checkov_scan_all, kubernetes_validate, rendered_objects

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "playbooks" / "site.yml"
INVENTORIES = ["minimal", "full", "external-postgres", "sso-only"]
# Oldest and newest Kubernetes minor versions we support (docs/install.md).
KUBE_VERSIONS = ["1.30.0", "1.34.0"]
# CRD-backed kinds kubernetes-validate has no schema for.
CRD_KINDS = {"ServiceMonitor"}
COMMON_LABELS = ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                 "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"]
WORKLOADS = {"Deployment", "StatefulSet"}
# Inline secret settings that must never appear in a ConfigMap.
SECRET_KEYS = re.compile(r"^\s*(macaroon_secret_key|registration_shared_secret|form_secret|turn_shared_secret|"
                         r"smtp_pass|client_secret|password|worker_replication_secret|static-auth-secret)\s*[:=]",
                         re.MULTILINE)

pytestmark = pytest.mark.integration


def render(run_playbook, inventory, out_dir, extra_vars=None):
    result = run_playbook(SITE, inventory=REPO / "inventories" / "test" / inventory,
                          extra_vars={"matrix_stack_render_dir": str(out_dir), **(extra_vars or {})})
    assert result.rc == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result


def load_dir(out_dir):
    """(path, object) of every manifest of a render directory (one object per file, see rendered_objects)."""
    return [(Path(out_dir) / rel, obj) for rel, obj in rendered_objects(out_dir)]


def render_all(run_playbook, jobs):
    """Render every (inventory path, out_dir, extra vars) job, two playbooks at a time (two cores)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: run_playbook(SITE, inventory=job[0], extra_vars={
            "matrix_stack_render_dir": str(job[1]), **job[2]}), jobs))
    for (inventory, _out, _extra), result in zip(jobs, results):
        assert result.rc == 0, f"{inventory}: " + result.stdout[-4000:] + result.stderr[-2000:]
    return results


@pytest.fixture(scope="module")
def rendered(run_playbook, tmp_path_factory):
    """One render per inventory for the whole module: the four test inventories and inventories/example."""
    out, jobs = {}, []
    for inventory in INVENTORIES + ["example"]:
        out[inventory] = tmp_path_factory.mktemp(f"render-{inventory}")
        path = REPO / "inventories" / ("example" if inventory == "example" else f"test/{inventory}")
        # ServiceMonitors are rendered only on request in render mode (there is no cluster to ask).
        extra = {"matrix_stack_servicemonitor": "always"} if inventory == "full" else {}
        jobs.append((path, out[inventory], extra))
    render_all(run_playbook, jobs)
    return out


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("inventory", INVENTORIES)
def test_kubernetes_validate_strict(rendered, inventory, kube_version):
    files = [str(path) for path, obj in load_dir(rendered[inventory]) if obj["kind"] not in CRD_KINDS]
    assert len(files) >= 15
    proc = kubernetes_validate(files, kube_version)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kubernetes_validate_reports_a_planted_defect(rendered, tmp_path):
    """Among all the valid files of a render, each invalid one is reported, wherever it stands."""
    files = [path for path, obj in load_dir(rendered["full"]) if obj["kind"] not in CRD_KINDS]
    service = yaml.safe_load(next(p for p in files if p.name.startswith("service-")).read_text())
    planted = []
    for name, change in (("first", {"replicaz": 1}), ("last", {"ports": [{"port": "http"}]})):
        obj = {**service, "spec": {**service["spec"], **change}}
        planted.append(tmp_path / f"{name}.yaml")
        planted[-1].write_text(yaml.safe_dump(obj))
    proc = kubernetes_validate([planted[0], *files, planted[1]], KUBE_VERSIONS[-1])
    assert proc.returncode != 0
    reported = proc.stdout + proc.stderr
    assert str(planted[0]) in reported and "replicaz" in reported, reported
    assert str(planted[1]) in reported, reported
    # Its positive twin in the same run: no valid file is reported.
    assert not [path for path in files if str(path) in reported], reported


def test_crd_objects_are_well_formed(rendered):
    monitors = [obj for _path, obj in load_dir(rendered["full"]) if obj["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"chat-synapse", "chat-coturn"}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


@pytest.fixture(scope="module")
def checkov_results(rendered, tmp_path_factory):
    return checkov_scan_all([rendered[inventory] for inventory in INVENTORIES], tmp_path_factory.mktemp("checkov"))


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_checkov_scans_every_object_and_fails_none(checkov_results, rendered, inventory):
    result = checkov_results[rendered[inventory]]
    assert_checkov_clean(result, rendered_objects(rendered[inventory]))
    assert result.summary["passed"] > 100


def test_checkov_gate_reports_a_planted_defect(rendered, tmp_path):
    """The gate fails on a rendered object that violates checks, and names only that object."""
    planted = tmp_path / "planted"
    shutil.copytree(rendered["minimal"], planted)
    deployment = next(planted.rglob("deployment-matrix-element.yaml"))
    obj = yaml.safe_load(deployment.read_text())
    container = obj["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["privileged"] = True
    container["env"] = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}}]
    deployment.write_text(yaml.safe_dump(obj))
    # A new file in a new nested folder is found too.
    (planted / "99-extra" / "deeper").mkdir(parents=True)
    (planted / "99-extra" / "deeper" / "pod-intruder.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "intruder", "namespace": "matrix"},
        "spec": {"hostNetwork": True, "containers": [{"name": "c", "image": "busybox:1.36"}]}}))
    result = checkov_scan_all([planted], tmp_path)[planted]
    with pytest.raises(AssertionError):
        assert_checkov_clean(result, rendered_objects(planted))
    assert result.returncode != 0
    failed = {(check, resource.split(".")[0] + "." + resource.split(".")[2]) for check, resource, _file in result.failed}
    assert ("CKV_K8S_16", "Deployment.matrix-element") in failed  # privileged
    assert ("CKV_K8S_35", "Deployment.matrix-element") in failed  # secret as an environment variable
    assert ("CKV_K8S_19", "Pod.intruder") in failed  # hostNetwork
    # Its positive twin in the same run: everything that was not planted still passes.
    others = {resource for _check, resource in failed} - {"Deployment.matrix-element", "Pod.intruder"}
    assert not [r for r in others if not r.startswith("Pod.matrix-element")], others


def test_checkov_skips_are_justified():
    text = (REPO / ".checkov.yml").read_text()
    config = yaml.safe_load(text)
    for check in config["skip-check"]:
        # The comment block right above each skipped check gives the reason.
        block = text.split(f"- {check}")[0].rsplit("- CKV", 1)[-1]
        assert f"# {check} " in block and len(block) > 120, f"{check} skipped without a reason"


LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_invariants(rendered, inventory):
    objects = load_dir(rendered[inventory])
    namespace = {"minimal": "matrix", "full": "matrix-full", "external-postgres": "matrix-extdb",
                 "sso-only": "matrix-sso"}[inventory]
    kinds = [obj["kind"] for _path, obj in objects]
    for path, obj in objects:
        labels = obj["metadata"].get("labels", {})
        missing = [label for label in COMMON_LABELS if label not in labels]
        assert not missing, f"{path.name}: missing labels {missing}"
        # The API server's label value syntax; kubernetes-validate does not check it.
        bad = {key: value for key, value in labels.items() if len(value) > 63 or not LABEL_VALUE.fullmatch(value)}
        assert not bad, f"{path.name}: invalid label values {bad}"
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace
        if obj["kind"] in WORKLOADS:
            check_pod(path, obj["spec"]["template"])
        if obj["kind"] == "CronJob":
            check_pod(path, obj["spec"]["jobTemplate"]["spec"]["template"])
        if obj["kind"] == "ConfigMap":
            for key, value in obj["data"].items():
                if key.endswith(".py"):
                    continue  # program text, not configuration
                assert not SECRET_KEYS.search(value), f"{path.name}: {key} carries an inline secret setting"
        if obj["kind"] == "Ingress":
            paths = [p["path"] for rule in obj["spec"]["rules"] for p in rule["http"]["paths"]]
            assert not any(p.startswith("/_synapse/admin") or p in ("/", "/_synapse") for p in paths
                           if obj["metadata"]["labels"]["app.kubernetes.io/name"] == "synapse"), paths
            assert obj["spec"]["tls"], f"{path.name}: Ingress without TLS"
    assert kinds.count("Namespace") == 1
    ns = next(obj for _path, obj in objects if obj["kind"] == "Namespace")
    for mode in ("enforce", "audit", "warn"):
        assert ns["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"
    if inventory == "external-postgres":
        assert "StatefulSet" not in kinds
        assert not any(obj["metadata"]["name"].endswith("-coturn") for _path, obj in objects if obj["kind"] == "Deployment")
    else:
        assert "StatefulSet" in kinds
    assert "Secret" not in kinds, "render mode must never write Secrets"
    secrets_md = (Path(rendered[inventory]) / "SECRETS.md").read_text()
    assert "signing.key" in secrets_md


def check_pod(path, template):
    spec = template["spec"]
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True, path.name
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", path.name
    assert spec["automountServiceAccountToken"] is False, path.name
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(field), path.name
    for volume in spec.get("volumes", []):
        assert "hostPath" not in volume, path.name
    for container in spec.get("initContainers", []) + spec["containers"]:
        sc = container["securityContext"]
        where = f"{path.name}:{container['name']}"
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        assert not sc["capabilities"].get("add"), where
        assert sc["runAsNonRoot"] is True, where
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert not sc.get("privileged"), where
        assert container["resources"]["requests"]["memory"], where
        assert container["resources"]["requests"]["cpu"], where
        assert container["resources"]["limits"]["memory"], where
        assert not any(port.get("hostPort") for port in container.get("ports", [])), where
        # No secret reaches a container through its command line or environment.
        assert not any("valueFrom" in env and "secretKeyRef" in env["valueFrom"] for env in container.get("env", [])), where


def test_synapse_ingress_paths_and_wellknown(rendered):
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for _path, obj in load_dir(rendered["full"])}
    ingress = objects[("Ingress", "chat-synapse")]
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "matrix.example.test"
    assert sorted(p["path"] for p in rule["http"]["paths"]) == ["/.well-known/matrix", "/_matrix", "/_synapse/client"]
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    wellknown = objects[("Ingress", "chat-synapse-wellknown")]
    assert wellknown["spec"]["rules"][0]["host"] == "example.test"
    # Synapse's /.well-known/matrix/server names <server name>:443, so federation and key APIs are routed there too.
    assert [p["path"] for p in wellknown["spec"]["rules"][0]["http"]["paths"]] == [
        "/.well-known/matrix", "/_matrix/federation", "/_matrix/key"]
    minimal = {(obj["kind"], obj["metadata"]["name"]) for _path, obj in load_dir(rendered["minimal"])}
    assert ("Ingress", "matrix-synapse-wellknown") not in minimal  # server name == public host


def test_synapse_config_wiring(rendered):
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for _path, obj in load_dir(rendered["full"])}
    config = yaml.safe_load(objects[("ConfigMap", "chat-synapse")]["data"]["homeserver.yaml"])
    assert config["server_name"] == "example.test"
    assert config["public_baseurl"] == "https://matrix.example.test/"
    assert config["turn_uris"] == ["turn:turn.example.test:30478?transport=udp",
                                   "turn:turn.example.test:30478?transport=tcp",
                                   "turns:turn.example.test:30479?transport=tcp"]
    assert config["turn_shared_secret_path"].startswith("/secrets/turn/")
    assert config["oidc_providers"][0]["client_secret_path"] == "/secrets/oidc/keycloak/client-secret"
    assert "client_secret_secret_name" not in config["oidc_providers"][0]
    for net in ("10.0.0.0/8", "169.254.0.0/16", "127.0.0.0/8", "fc00::/7", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"):
        assert net in config["url_preview_ip_range_blacklist"]
        assert net in config["ip_range_blacklist"]
    assert config["registrations_require_3pid"] == ["email"] and config["registration_requires_token"] is True
    assert "email" not in config  # the email block (with smtp_pass) is composed in memory at start
    deployment = objects[("Deployment", "chat-synapse")]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--no-secrets-in-config" in args
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    probes = deployment["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert probes[probe]["httpGet"]["path"] == "/health"
    assert len(deployment["spec"]["template"]["metadata"]["annotations"]["matrix.stack/config-hash"]) == 64

    sso = {(obj["kind"], obj["metadata"]["name"]): obj for _path, obj in load_dir(rendered["sso-only"])}
    sso_config = yaml.safe_load(sso[("ConfigMap", "matrix-synapse")]["data"]["homeserver.yaml"])
    assert sso_config["password_config"]["enabled"] is False
    assert sso_config["enable_registration"] is False
    assert sso_config["oidc_providers"][0]["idp_id"] == "authentik"

    ext = {(obj["kind"], obj["metadata"]["name"]): obj for _path, obj in load_dir(rendered["external-postgres"])}
    ext_config = yaml.safe_load(ext[("ConfigMap", "matrix-synapse")]["data"]["homeserver.yaml"])
    expected = {"host": "10.20.0.5", "port": 5433, "dbname": "synapse_prod", "user": "synapse_app", "sslmode": "verify-full"}
    assert {key: ext_config["database"]["args"].get(key) for key in expected} == expected
    assert "turn_uris" not in ext_config
    volumes = ext[("Deployment", "matrix-synapse")]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "db-secret", "secret": {"secretName": "external-db", "defaultMode": 0o440,
                                            "items": [{"key": "password", "path": "password"}]}} in volumes
    # TLS: the CA from a ConfigMap (sslrootcert), the client certificate from a Secret (sslcert; the key is
    # copied by the init container to the in-memory runtime directory with mode 0600, then sslkey).
    assert {key: ext_config["database"]["args"][key] for key in ("sslrootcert", "sslcert", "sslkey")} == {
        "sslrootcert": "/secrets/db-ca/ca.crt", "sslcert": "/secrets/db-client/tls.crt",
        "sslkey": "/run/synapse/postgres-client.key"}
    assert {"name": "db-ca", "configMap": {"name": "external-db-ca", "defaultMode": 0o444,
                                           "items": [{"key": "ca.crt", "path": "ca.crt"}]}} in volumes
    init_args = ext[("Deployment", "matrix-synapse")]["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert init_args[init_args.index("--private-copy") + 1:][:2] == ["/secrets/db-client/tls.key", "/run/synapse/postgres-client.key"]


def test_postgres_statefulset(rendered):
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for _path, obj in load_dir(rendered["full"])}
    sts = objects[("StatefulSet", "chat-postgres")]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("docker.io/library/postgres:17")
    args = dict(zip(container["args"][::2], container["args"][1::2]))
    settings = dict(arg.split("=", 1) for flag, arg in zip(container["args"][::2], container["args"][1::2]))
    assert set(args) == {"-c"}
    # Tuned from the 2Gi memory limit.
    assert settings["shared_buffers"] == "512MB"
    assert settings["effective_cache_size"] == "1536MB"
    assert settings["max_connections"] == "150"
    assert settings["random_page_cost"] == "1.1"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "--locale=C" in env["POSTGRES_INITDB_ARGS"] and "--encoding=UTF8" in env["POSTGRES_INITDB_ARGS"]
    assert "POSTGRES_PASSWORD" not in env and env["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "standard" and claim["resources"]["requests"]["storage"] == "20Gi"
    init = objects[("ConfigMap", "chat-postgres-init")]["data"]["10-create-synapse-database.sh"]
    assert "LC_COLLATE 'C'" in init and "ENCODING 'UTF8'" in init and "TEMPLATE template0" in init
    assert objects[("Service", "chat-postgres-headless")]["spec"]["clusterIP"] == "None"


def test_coturn_config(rendered):
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for _path, obj in load_dir(rendered["full"])}
    conf = objects[("ConfigMap", "chat-coturn")]["data"]["turnserver.conf"]
    assert "use-auth-secret" in conf and "static-auth-secret" not in conf
    for denied in ("10.0.0.0-10.255.255.255", "127.0.0.0-127.255.255.255", "169.254.0.0-169.254.255.255",
                   "172.16.0.0-172.31.255.255", "192.168.0.0-192.168.255.255", "100.64.0.0-100.127.255.255",
                   "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"):
        assert f"denied-peer-ip={denied}\n" in conf
    assert "external-ip=203.0.113.10" in conf and "realm=example.test" in conf
    assert "min-port=31000" in conf and "max-port=31049" in conf and "cert=" in conf
    service = objects[("Service", "chat-coturn")]
    assert service["spec"]["type"] == "NodePort"
    relay = [p for p in service["spec"]["ports"] if p["name"].startswith("relay-")]
    assert len(relay) == 50 and all(p["nodePort"] == p["port"] for p in relay)
    deployment = objects[("Deployment", "chat-coturn")]["spec"]["template"]["spec"]
    argv = " ".join(deployment["containers"][0].get("command", []) + deployment["containers"][0].get("args", []))
    assert "secret" not in argv
    netpol = objects[("NetworkPolicy", "chat-coturn")]
    relay_rule = [p for p in netpol["spec"]["ingress"][0]["ports"] if p.get("endPort")]
    assert relay_rule == [{"protocol": "UDP", "port": 31000, "endPort": 31049}]


def test_networkpolicies(rendered):
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for _path, obj in load_dir(rendered["full"])}
    deny = objects[("NetworkPolicy", "chat-default-deny")]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    synapse = objects[("NetworkPolicy", "chat-synapse")]["spec"]
    internet = [peer["ipBlock"] for rule in synapse["egress"] for peer in rule.get("to", []) if "ipBlock" in peer
                and peer["ipBlock"]["cidr"] == "0.0.0.0/0"]
    assert internet and "169.254.0.0/16" in internet[0]["except"] and "10.0.0.0/8" in internet[0]["except"]
    assert any(rule.get("to") == [{"ipBlock": {"cidr": "10.10.0.25/32"}}] and rule["ports"] == [{"protocol": "TCP", "port": 587}]
               for rule in synapse["egress"]), "SMTP egress"
    assert any(rule["ports"] == [{"port": 443, "protocol": "TCP"}, {"port": 8443, "protocol": "TCP"}]
               for rule in synapse["egress"] if "ports" in rule), "OIDC egress"
    postgres = objects[("NetworkPolicy", "chat-postgres")]["spec"]
    sources = postgres["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "synapse", "app.kubernetes.io/instance": "chat"}}} in sources
    assert len(sources) == 2  # Synapse and the backup jobs, nothing else
    ext = {(obj["kind"], obj["metadata"]["name"]): obj for _path, obj in load_dir(rendered["external-postgres"])}
    ext_egress = ext[("NetworkPolicy", "matrix-synapse")]["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "10.20.0.5/32"}}], "ports": [{"protocol": "TCP", "port": 5433}]} in ext_egress


def test_element_config(rendered):
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for _path, obj in load_dir(rendered["full"])}
    data = objects[("ConfigMap", "chat-element")]["data"]
    config = yaml.safe_load(data["config.json"])
    expected_homeserver = {"base_url": "https://matrix.example.test/", "server_name": "example.test"}
    assert config["default_server_config"]["m.homeserver"] == expected_homeserver
    assert config["default_theme"] == "custom-Example Dark"
    assert config["setting_defaults"]["custom_themes"][0]["name"] == "Example Dark"
    assert config["setting_defaults"]["breadcrumbs"] is True  # extra keys deep-merged
    assert config["branding"]["auth_header_logo_url"] == "https://example.test/logo.svg"
    assert config["room_directory"]["servers"] == ["example.test", "matrix.org"]
    assert config["disable_guests"] is True
    for header in ("X-Frame-Options", "X-Content-Type-Options", "Content-Security-Policy", "Referrer-Policy"):
        assert f"add_header {header} " in data["nginx.conf"]


def test_rerender_removes_stale_objects(run_playbook, rendered, tmp_path):
    """A second render into a directory of the first (a copy of the module's minimal render) with Element off."""
    out = tmp_path / "out"
    shutil.copytree(rendered["minimal"], out)
    assert (out / "50-element").is_dir()
    keep = out / "my-notes.yaml"
    keep.write_text("not ours\n")
    render(run_playbook, "minimal", out, {"matrix_stack_element_enabled": False})
    assert not (out / "50-element").exists()
    assert keep.exists(), "render mode must only remove what it wrote"
    # Exactly Element's objects (all named <instance>-element, its NetworkPolicy included) are gone; every other
    # file is still there.
    kept = {rel for rel, obj in rendered_objects(rendered["minimal"]) if obj["metadata"]["name"] != "matrix-element"}
    assert len(kept) < len(rendered_objects(rendered["minimal"])) - 4
    keep.unlink()
    assert {rel for rel, _obj in rendered_objects(out)} == kept


def test_example_inventory_renders(rendered):
    objects = {(obj["kind"], obj["metadata"]["name"]) for _path, obj in load_dir(rendered["example"])}
    assert ("Ingress", "matrix-synapse-wellknown") in objects  # example.com delegates to matrix.example.com
    assert ("StatefulSet", "matrix-postgres") in objects and ("Deployment", "matrix-coturn") in objects
