"""matrix.stack.matrix_secret through ansible-playbook against the real local Kubernetes API server.

Every test runs the module via the `run_playbook` fixture (real Ansible, real kube-apiserver, real RBAC) and
checks the Secret with kubectl. The Synapse test starts a real Synapse with a key the module generated.
"""

import base64
import itertools
import json
import re
import socket
import urllib.request

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.kube, pytest.mark.slow]

SIGNING_LINE = re.compile(r"^ed25519 (a_[A-Za-z0-9]{8}) ([A-Za-z0-9+/]{43})\n$")
OWNED = {"matrix.stack/secret": "true", "app.kubernetes.io/managed-by": "matrix.stack"}

KEYS = [
    {"name": "signing.key", "type": "signing_key"},
    {"name": "macaroon_secret_key", "type": "alnum"},
    {"name": "form_secret", "type": "alnum", "length": 32},
    {"name": "encryption", "type": "hex"},
    {"name": "b64", "type": "base64", "length": 24},
    {"name": "postgres_password", "type": "password"},
    {"name": "mas.rsa", "type": "rsa", "length": 2048},
    {"name": "mas.ec", "type": "ecdsa"},
    {"name": "smtp_password", "value": "smtp-operator-supplied-7f3a9c"},
]


# ----- helpers -----------------------------------------------------------------------------------

class SecretRunner:
    """Writes one-task playbooks for matrix_secret and runs them with the run_playbook fixture."""

    def __init__(self, kube_cluster, run_playbook, tmp_path):
        self.kube = kube_cluster
        self.run_playbook = run_playbook
        self.tmp_path = tmp_path
        self.counter = itertools.count(1)
        self.outputs = []  # every stdout+stderr, to grep for leaked values

    def playbook(self, tasks, auth=True):
        number = next(self.counter)  # thread-safe: tests run playbooks in parallel
        play = {
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
            "tasks": tasks,
        }
        if auth:
            play["module_defaults"] = {"group/matrix.stack.matrix": {"kubeconfig": self.kube.kubeconfig}}
        path = self.tmp_path / ("play%d.yml" % number)
        path.write_text(yaml.safe_dump([play], sort_keys=False))
        return path

    def run_tasks(self, tasks, auth=True, **kwargs):
        result = self.run_playbook(self.playbook(tasks, auth=auth), json_output=kwargs.pop("json_output", True),
                                   **kwargs)
        self.outputs.append(result.stdout + "\n" + result.stderr)
        return result

    def run(self, auth=True, ignore_errors=False, **module_args):
        """Run one matrix_secret task; return (task result dict, PlaybookResult)."""
        task = {"name": "matrix_secret", "matrix.stack.matrix_secret": module_args}
        if ignore_errors:
            task["ignore_errors"] = True
        result = self.run_tasks([task], auth=auth)
        assert result.results, "no JSON from ansible-playbook:\n%s\n%s" % (result.stdout[-3000:], result.stderr[-3000:])
        task_result = result.results["plays"][0]["tasks"][0]["hosts"]["localhost"]
        return task_result, result

    def secret(self, namespace, name):
        proc = self.kube.kubectl("get", "secret", name, "-n", namespace, "-o", "json", check=False)
        if proc.returncode != 0:
            assert "NotFound" in proc.stderr, proc.stderr
            return None
        return json.loads(proc.stdout)


def data_of(secret):
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


def secret_values(data):
    """The secret values of a Secret's data (the .old.yaml companions hold public keys only)."""
    return [v for k, v in data.items() if not k.endswith(".old.yaml")]


def leak_forms(value):
    """Strings whose presence in output would reveal ``value`` (raw, JSON-escaped, base64, distinctive lines)."""
    text = value.decode("utf-8", "replace")
    forms = {text.strip(), json.dumps(text)[1:-1], base64.b64encode(value).decode()}
    for line in text.splitlines():
        line = line.strip()
        if len(line) >= 16 and not line.startswith("-----"):
            forms.add(line)
        for part in line.split():
            if len(part) >= 16:
                forms.add(part)  # e.g. the seed of a signing key line
    return {f for f in forms if len(f) >= 8}


def assert_no_values(outputs, values):
    for value in values:
        for form in leak_forms(value):
            for output in outputs:
                assert form not in output, "a secret value appeared in the Ansible output"


@pytest.fixture
def runner(kube_cluster, run_playbook, tmp_path):
    return SecretRunner(kube_cluster, run_playbook, tmp_path)


def kube_server_and_ca(kube_cluster, tmp_path):
    view = json.loads(kube_cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = view["clusters"][0]["cluster"]
    ca_path = tmp_path / "ca.crt"
    if "certificate-authority-data" in cluster:
        ca_path.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    else:
        ca_path.write_bytes(open(cluster["certificate-authority"], "rb").read())
    return cluster["server"], str(ca_path)


# ----- tests -------------------------------------------------------------------------------------

def test_create_then_three_reruns_are_byte_identical(runner, kube_namespace, tmp_path):
    ns = kube_namespace()
    supplied = tmp_path / "ldap.pw"
    supplied.write_bytes(b"from-a-file-9b1d2e\n")
    keys = KEYS + [{"name": "ldap_password", "value_from_file": str(supplied)}]
    first, _output = runner.run(namespace=ns, name="synapse", keys=keys)
    assert first["changed"] is True and not first.get("failed"), first.get("msg")
    assert set(first["generated"]) == {"signing.key", "signing.key.old.yaml", "macaroon_secret_key", "form_secret",
                                       "encryption", "b64", "postgres_password", "mas.rsa", "mas.ec"}
    assert sorted(first["stored"]) == ["ldap_password", "smtp_password"]
    assert "values" not in first

    secret = runner.secret(ns, "synapse")
    assert secret["metadata"]["labels"] == OWNED
    assert secret["type"] == "Opaque"
    data = data_of(secret)
    # each type has the documented shape
    match = SIGNING_LINE.match(data["signing.key"].decode())
    assert match and first["public_keys"]["signing.key"]["key_id"] == "ed25519:" + match.group(1)
    assert json.loads(data["signing.key.old.yaml"]) == {"old_signing_keys": {}}
    assert re.fullmatch(rb"[A-Za-z0-9]{64}", data["macaroon_secret_key"])
    assert re.fullmatch(rb"[A-Za-z0-9]{32}", data["form_secret"])
    assert re.fullmatch(rb"[0-9a-f]{64}", data["encryption"])
    assert len(base64.b64decode(data["b64"], validate=True)) == 24
    assert len(data["postgres_password"]) == 32
    assert data["mas.rsa"].startswith(b"-----BEGIN PRIVATE KEY-----")
    assert data["mas.ec"].startswith(b"-----BEGIN PRIVATE KEY-----")
    assert data["smtp_password"] == b"smtp-operator-supplied-7f3a9c"
    assert data["ldap_password"] == b"from-a-file-9b1d2e\n"

    for _attempt in range(3):
        again, _output = runner.run(namespace=ns, name="synapse", keys=keys)
        assert again["changed"] is False, again
        assert not again["generated"] and not again["rotated"] and not again["stored"] and not again["updated"]
        current = runner.secret(ns, "synapse")
        assert current["data"] == secret["data"]  # byte-identical (base64 of identical bytes)
        assert current["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]  # not even rewritten
    assert_no_values(runner.outputs, secret_values(data))


def test_new_key_only_that_key_generated(runner, kube_namespace):
    ns = kube_namespace()
    runner.run(namespace=ns, name="s", keys=KEYS)
    before = data_of(runner.secret(ns, "s"))
    result, _output = runner.run(namespace=ns, name="s", keys=KEYS + [{"name": "turn_shared_secret", "type": "alnum"}])
    assert result["changed"] and result["generated"] == ["turn_shared_secret"]
    after = data_of(runner.secret(ns, "s"))
    assert set(after) - set(before) == {"turn_shared_secret"}
    assert {k: after[k] for k in before} == before


def test_rotate_changes_only_named_key(runner, kube_namespace):
    ns = kube_namespace()
    runner.run(namespace=ns, name="s", keys=KEYS)
    before = data_of(runner.secret(ns, "s"))
    result, _output = runner.run(namespace=ns, name="s", keys=KEYS, rotate=["form_secret"])
    assert result["changed"] and result["rotated"] == ["form_secret"]
    after = data_of(runner.secret(ns, "s"))
    assert {k for k in before if before[k] != after[k]} == {"form_secret"}
    assert len(after["form_secret"]) == 32

    # the signing key: new key id, the old public key goes to signing.key.old.yaml
    old_public = result["public_keys"]["signing.key"]
    rotated, _output = runner.run(namespace=ns, name="s", keys=KEYS, rotate=["signing.key"])
    assert rotated["rotated"] == ["signing.key"] and rotated["updated"] == ["signing.key.old.yaml"]
    final = data_of(runner.secret(ns, "s"))
    assert {k for k in after if after[k] != final[k]} == {"signing.key", "signing.key.old.yaml"}
    new_public = rotated["public_keys"]["signing.key"]
    assert new_public["key_id"] != old_public["key_id"]
    old_doc = yaml.safe_load(final["signing.key.old.yaml"])["old_signing_keys"]
    assert list(old_doc) == [old_public["key_id"]]
    assert old_doc[old_public["key_id"]]["key"] == old_public["public_key"]
    assert rotated["old_signing_keys"]["signing.key"] == old_doc
    assert rotated["retired_key_ids"] == [old_public["key_id"]]
    assert_no_values(runner.outputs, secret_values(before) + secret_values(final))


def test_check_mode_creates_nothing_and_diff_shows_names_only(runner, kube_namespace):
    ns = kube_namespace()
    task = {"name": "matrix_secret", "matrix.stack.matrix_secret": {"namespace": ns, "name": "s", "keys": KEYS}}
    result = runner.run_tasks([task], check=True, diff=True, json_output=False)
    assert result.rc == 0, result.stdout[-3000:]
    assert result.stats["localhost"]["changed"] == 1
    assert runner.secret(ns, "s") is None
    for key in KEYS:
        assert key["name"] in result.stdout  # the diff lists the names
    assert "smtp-operator-supplied-7f3a9c" not in result.stdout

    runner.run(namespace=ns, name="s", keys=KEYS)
    secret = runner.secret(ns, "s")
    task["matrix.stack.matrix_secret"] = {"namespace": ns, "name": "s", "rotate": ["signing.key", "form_secret"],
                                          "keys": KEYS + [{"name": "extra", "type": "alnum"}]}
    result = runner.run_tasks([task], check=True, diff=True, json_output=False, verbosity=3)
    assert result.rc == 0 and result.stats["localhost"]["changed"] == 1
    assert runner.secret(ns, "s")["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    assert re.search(r'"extra": "generated"', result.stdout)
    assert re.search(r'"form_secret": "rotated"', result.stdout)
    assert_no_values(runner.outputs, secret_values(data_of(secret)))


def test_foreign_secret_refused_then_adopted(runner, kube_namespace, kube_cluster):
    ns = kube_namespace()
    kube_cluster.kubectl("create", "secret", "generic", "legacy", "-n", ns,
                         "--from-literal=macaroon_secret_key=hand-made-value-123456")
    before = runner.secret(ns, "legacy")
    refused, _output = runner.run(namespace=ns, name="legacy", keys=KEYS, ignore_errors=True)
    assert refused["failed"] and "not managed by matrix.stack" in refused["msg"] and "adopt" in refused["msg"]
    assert runner.secret(ns, "legacy")["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    refused_delete, _output = runner.run(namespace=ns, name="legacy", state="absent", ignore_errors=True)
    assert refused_delete["failed"] and runner.secret(ns, "legacy") is not None

    adopted, _output = runner.run(namespace=ns, name="legacy", keys=KEYS, adopt=True)
    assert adopted["changed"] and adopted["adopted"]
    assert "macaroon_secret_key" in adopted["kept"]
    after = runner.secret(ns, "legacy")
    assert data_of(after)["macaroon_secret_key"] == b"hand-made-value-123456"
    assert after["metadata"]["labels"] == OWNED
    # now owned: a plain run is a no-op, no adopt needed
    again, _output = runner.run(namespace=ns, name="legacy", keys=KEYS)
    assert again["changed"] is False and again["adopted"] is False


def test_parallel_runs_agree_on_one_set_of_values(runner, kube_namespace):
    """Three ansible-playbook processes race to create the same Secret; all succeed and all report the key that
    actually ended up in the Secret (losers re-read after 409 instead of overwriting)."""
    import threading  # pylint: disable=import-outside-toplevel

    ns = kube_namespace()
    keys = KEYS[:3] + [{"name": "turn_shared_secret", "type": "alnum"}]
    results = [None] * 3

    def worker(index):
        results[index] = runner.run(namespace=ns, name="race", keys=keys)[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    data = data_of(runner.secret(ns, "race"))
    public = list(gen_public_keys(data["signing.key"]).items())[0]
    for result in results:
        assert result is not None and not result.get("failed"), result and result.get("msg")
        assert (result["public_keys"]["signing.key"]["key_id"], result["public_keys"]["signing.key"]["public_key"]) \
            == public
    assert sum(1 for r in results if r["generated"]) >= 1
    again, _output = runner.run(namespace=ns, name="race", keys=keys)
    assert again["changed"] is False


def gen_public_keys(line):
    """Derive the public key with cryptography, independently of the module's code."""
    from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ed25519  # pylint: disable=import-outside-toplevel

    _alg, version, seed = line.decode().split()
    private = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed + "="))
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"ed25519:" + version: base64.b64encode(raw).decode().rstrip("=")}


def test_absent(runner, kube_namespace):
    ns = kube_namespace()
    runner.run(namespace=ns, name="s", keys=KEYS[:2])
    result = runner.run_tasks([{"matrix.stack.matrix_secret": {"namespace": ns, "name": "s", "state": "absent"}}],
                              check=True)
    assert result.results["plays"][0]["tasks"][0]["hosts"]["localhost"]["changed"] is True
    assert runner.secret(ns, "s") is not None
    deleted, _output = runner.run(namespace=ns, name="s", state="absent")
    assert deleted["changed"] and deleted["deleted"] and runner.secret(ns, "s") is None
    again, _output = runner.run(namespace=ns, name="s", state="absent")
    assert again["changed"] is False


def test_return_values_are_hidden_but_usable(runner, kube_namespace):
    ns = kube_namespace()
    tasks = [
        {"name": "get values", "register": "sec",
         "matrix.stack.matrix_secret": {"namespace": ns, "name": "s", "keys": KEYS, "return_values": True}},
        {"name": "use them", "no_log": True, "ansible.builtin.assert": {"that": [
            "sec['values']['smtp_password'] == 'smtp-operator-supplied-7f3a9c'",
            "sec['values']['signing.key'].startswith('ed25519 a_')",
            "sec['values']['macaroon_secret_key'] | length == 64"]}},
    ]
    result = runner.run_tasks(tasks, json_output=False, verbosity=3)
    assert result.rc == 0, result.stdout[-3000:]
    assert "the output has been hidden" in result.stdout
    assert_no_values(runner.outputs, secret_values(data_of(runner.secret(ns, "s"))))


def test_errors_namespace_missing_unreachable_forbidden(runner, kube_namespace, kube_cluster, tmp_path):
    missing, _output = runner.run(namespace="matrix-stack-no-such-ns", name="s", keys=KEYS[:2], ignore_errors=True)
    assert missing["failed"] and missing["kube_error"] == "namespace_not_found"
    assert "namespace 'matrix-stack-no-such-ns' does not exist" in missing["msg"]

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable, _output = runner.run(auth=False, host="https://127.0.0.1:%d" % port, api_key="x", validate_certs=False,
                                      namespace="ns", name="s", keys=KEYS[:2], ignore_errors=True)
    assert unreachable["failed"] and unreachable["kube_error"] == "unreachable", unreachable["msg"]
    assert "unreachable" in unreachable["msg"]

    # a service account that may only read secrets: create is forbidden by RBAC
    ns = kube_namespace()
    kube_cluster.kubectl("create", "serviceaccount", "reader", "-n", ns)
    kube_cluster.kubectl("create", "role", "secret-reader", "-n", ns, "--verb=get", "--resource=secrets")
    kube_cluster.kubectl("create", "rolebinding", "reader", "-n", ns, "--role=secret-reader",
                         "--serviceaccount=%s:reader" % ns)
    token = kube_cluster.kubectl("create", "token", "reader", "-n", ns, "--duration=10m").stdout.strip()
    server, ca_path = kube_server_and_ca(kube_cluster, tmp_path)
    forbidden, _output = runner.run(auth=False, host=server, api_key=token, ca_cert=ca_path, namespace=ns, name="s",
                                    keys=KEYS[:2], ignore_errors=True)
    assert forbidden["failed"] and forbidden["kube_error"] == "forbidden", forbidden["msg"]
    assert "not allowed to create Secret %s/s" % ns in forbidden["msg"] and "RBAC" in forbidden["msg"]
    assert runner.secret(ns, "s") is None
    # without the cluster CA, TLS verification fails with a hint instead of a traceback
    untrusted, _output = runner.run(auth=False, host=server, api_key=token, namespace=ns, name="s", keys=KEYS[:2],
                                    ignore_errors=True)
    assert untrusted["failed"] and untrusted["kube_error"] == "tls", untrusted["msg"]
    assert "ca_cert" in untrusted["msg"]
    # check mode is truthful about RBAC as well (server-side dry run)
    checked = runner.run_tasks([{"matrix.stack.matrix_secret": {
        "host": server, "api_key": token, "ca_cert": ca_path, "namespace": ns, "name": "s", "keys": KEYS[:2]},
        "ignore_errors": True}], auth=False, check=True)
    assert checked.results["plays"][0]["tasks"][0]["hosts"]["localhost"]["kube_error"] == "forbidden"
    # the same identity can read everything it needs on an existing Secret: a no-op run succeeds
    runner.run(namespace=ns, name="s", keys=KEYS[:2])
    readonly_noop, _output = runner.run(auth=False, host=server, api_key=token, ca_cert=ca_path, namespace=ns, name="s",
                                        keys=KEYS[:2])
    assert readonly_noop["changed"] is False and not readonly_noop.get("failed")
    for output in runner.outputs:
        assert token not in output


def test_vvv_never_prints_a_value(runner, kube_namespace, kube_cluster):
    """Every operation with -vvv and --diff, each in check mode then for real; every value the Secret ever held is
    grepped in all output. The steps run as tasks of three playbooks, split where values are replaced (a rotation,
    a new operator-supplied value) so that the Secret's values are read before they go."""
    ns = kube_namespace()
    kube_cluster.kubectl("create", "secret", "generic", "foreign", "-n", ns,
                         "--from-literal=macaroon_secret_key=foreign-secret-value-42")
    seen = [b"foreign-secret-value-42", b"smtp-operator-supplied-7f3a9c", b"new-smtp-value-5e6f7a8b"]
    runs = [
        [dict(keys=KEYS),
         dict(keys=KEYS),
         dict(keys=KEYS + [{"name": "extra", "type": "password"}])],
        [dict(keys=KEYS, rotate=["signing.key", "postgres_password", "mas.ec"])],
        [dict(keys=KEYS[:-1] + [{"name": "smtp_password", "value": "new-smtp-value-5e6f7a8b"}]),
         dict(keys=KEYS, return_values=True),
         dict(keys=[{"name": "bad/name", "type": "alnum"}]),
         dict(keys=KEYS, rotate=["smtp_password"])],
    ]
    for number, steps in enumerate(runs):
        tasks = [{"name": f"step {i} {'check' if check else 'apply'}", "check_mode": check, "ignore_errors": True,
                  "matrix.stack.matrix_secret": dict(namespace=ns, name="s", **step)}
                 for i, step in enumerate(steps) for check in (True, False)]
        if number == len(runs) - 1:
            adopt = dict(namespace=ns, name="foreign", keys=KEYS, adopt=True)
            tasks.append({"name": "adopt", "matrix.stack.matrix_secret": adopt})
        result = runner.run_tasks(tasks, json_output=False, verbosity=3, diff=True)
        assert result.rc == 0, result.stdout[-3000:]
        ran = [line for line in result.stdout.splitlines() if line.startswith("TASK [step ")]
        assert len(ran) == 2 * len(steps), ran
        seen.extend(secret_values(data_of(runner.secret(ns, "s"))))
    # The invalid key name and the rotation of an operator-supplied value failed (check and apply), nothing else.
    assert result.stats["localhost"]["failed"] == 0 and result.stats["localhost"]["ignored"] == 4, result.stats
    seen.extend(secret_values(data_of(runner.secret(ns, "foreign"))))
    assert data_of(runner.secret(ns, "foreign"))["macaroon_secret_key"] == b"foreign-secret-value-42"
    assert len(runner.outputs) == len(runs)
    values = set(seen)
    assert len(values) > 20
    assert_no_values(runner.outputs, values)


@pytest.mark.synapse
def test_synapse_accepts_generated_signing_key(runner, kube_namespace, synapse_factory, tmp_path):
    ns = kube_namespace()
    keys = [{"name": "signing.key", "type": "signing_key"}]
    result, _output = runner.run(namespace=ns, name="synapse", keys=keys)
    first = result["public_keys"]["signing.key"]
    data = data_of(runner.secret(ns, "synapse"))
    key_path = tmp_path / "signing.key"
    key_path.write_bytes(data["signing.key"])
    key_path.chmod(0o600)
    synapse = synapse_factory(server_name="secret.test", extra_config={"signing_key_path": str(key_path)},
                              database="sqlite")
    try:
        served = fetch_server_keys(synapse)
        assert served["verify_keys"] == {first["key_id"]: {"key": first["public_key"]}}
    finally:
        synapse.stop()

    # rotate; Synapse serves the new key and, with the companion file as an extra config, the old one
    rotated, _output = runner.run(namespace=ns, name="synapse", keys=keys, rotate=["signing.key"])
    second = rotated["public_keys"]["signing.key"]
    data = data_of(runner.secret(ns, "synapse"))
    key_path.write_bytes(data["signing.key"])
    old_path = tmp_path / "old_signing_keys.yaml"
    old_path.write_bytes(data["signing.key.old.yaml"])
    synapse2 = synapse_factory(server_name="secret.test", extra_config={"signing_key_path": str(key_path)},
                               database="sqlite", extra_args=("-c", str(old_path)))
    try:
        served = fetch_server_keys(synapse2)
        assert served["verify_keys"] == {second["key_id"]: {"key": second["public_key"]}}
        assert first["key_id"] in served["old_verify_keys"]
        assert served["old_verify_keys"][first["key_id"]]["key"] == first["public_key"]
    finally:
        synapse2.stop()
    assert_no_values(runner.outputs, secret_values(data))


def fetch_server_keys(synapse):
    with urllib.request.urlopen(synapse.base_url + "/_matrix/key/v2/server", timeout=10) as resp:
        doc = json.loads(resp.read())
    assert doc["server_name"] == synapse.server_name
    return doc
