"""Bad input fails before anything is applied, with a message naming the variable.

Each case runs playbooks/site.yml in render mode with one invalid setting on top of the
minimal inventory (or without the inventory, for missing required values). The run must
fail, the output must name the variable, and nothing may have been written: validation
of every enabled role happens before the first manifest leaves Ansible.
"""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "playbooks" / "site.yml"
MINIMAL = REPO / "inventories" / "test" / "minimal"
REQUIRED = {"synapse_server_name": "bad.test.local", "coturn_public_host": "turn.bad.test.local",
            "coturn_external_ip": "203.0.113.7"}

pytestmark = pytest.mark.integration

# (id, extra vars, variable the message must name, extra text the message must contain)
CASES = [
    ("server-name-chars", {"synapse_server_name": "Bad_Name!"}, "synapse_server_name", "DNS name"),
    ("server-name-path", {"synapse_server_name": "example.com/matrix"}, "synapse_server_name", None),
    ("log-level-choice", {"synapse_log_level": "LOUD"}, "synapse_log_level", "one of"),
    ("metrics-port-type", {"synapse_metrics_port": "nine-thousand"}, "synapse_metrics_port", None),
    ("metrics-port-clash", {"synapse_metrics_port": 8008}, "synapse_metrics_port", None),
    ("postgres-mode-choice", {"postgres_mode": "cloud"}, "postgres_mode", "one of"),
    ("postgres-major", {"postgres_image_tag": "15.4"}, "postgres_image_tag", "16 or 17"),
    ("postgres-external-host", {"postgres_mode": "external", "postgres_external_password_secret_name": "db"},
     "postgres_external_host", None),
    ("postgres-sslmode-choice", {"postgres_external_sslmode": "maybe"}, "postgres_external_sslmode", "one of"),
    ("postgres-memory", {"postgres_resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "100Mi"}}},
     "postgres_resources.limits.memory", None),
    ("baseurl-scheme", {"synapse_public_baseurl": "matrix.example.com"}, "synapse_public_baseurl", None),
    ("relay-range", {"coturn_relay_min_port": 50000, "coturn_relay_max_port": 49000}, "coturn_relay_min_port", None),
    ("nodeport-relay-range", {"coturn_service_type": "NodePort"}, "coturn_relay_min_port", "30000-32767"),
    ("coturn-service-type", {"coturn_service_type": "ClusterIP"}, "coturn_service_type", "one of"),
    ("coturn-external-ip", {"coturn_external_ip": "not-an-ip"}, "coturn_external_ip", None),
    ("registration-unverified", {"synapse_registration_enabled": True}, "synapse_registration_allow_unverified", None),
    ("registration-email", {"synapse_registration_enabled": True, "synapse_registration_require_email": True},
     "synapse_email_enabled", None),
    ("sso-only-without-idp", {"synapse_password_login_enabled": False}, "synapse_oidc_providers", None),
    ("oidc-inline-secret", {"synapse_oidc_providers": [{"idp_id": "kc", "issuer": "https://sso.example.com/",
                                                       "client_id": "synapse", "client_secret": "hunter2"}]},
     "synapse_oidc_providers[0]", "client_secret_secret_name"),
    ("oidc-type", {"synapse_oidc_providers": "keycloak"}, "synapse_oidc_providers", None),
    ("extra-config-secret", {"synapse_extra_config": {"macaroon_secret_key": "x"}}, "synapse_extra_config", None),
    ("upload-size", {"synapse_max_upload_size": "lots"}, "synapse_max_upload_size", None),
    ("element-theme", {"element_default_theme": "purple"}, "element_default_theme", None),
    ("element-url", {"element_public_url": "ftp://element.example.com/"}, "element_public_url", None),
    ("namespace", {"matrix_stack_namespace": "Bad_NS"}, "matrix_stack_namespace", None),
    ("servicemonitor-choice", {"matrix_stack_servicemonitor": "sometimes"}, "matrix_stack_servicemonitor", "one of"),
    ("ingress-selector-empty", {"matrix_stack_ingress_namespace_selector": {}}, "networkpolicy_ingress_namespace_selector", None),
    ("backup-without-api-egress", {"backup_schedule_enabled": True, "backup_image": "registry.test/backup:1",
                                   "backup_allow_unencrypted_secrets": True}, "networkpolicy_kube_api_peers", None),
    ("backup-without-image", {"backup_schedule_enabled": True, "backup_allow_unencrypted_secrets": True,
                              "networkpolicy_kube_api_peers": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]}, "backup_image", None),
    ("wait-timeout-type", {"matrix_stack_wait_timeout": "forever"}, "matrix_stack_wait_timeout", None),
]


def assert_failed_naming(result, variable, text, out_dir):
    output = result.stdout + result.stderr
    assert result.rc != 0, output[-3000:]
    assert result.stats.get("localhost", {}).get("failed", 1) >= 1
    assert variable in output, f"{variable} not named in:\n{output[-3000:]}"
    if text:
        assert text in output, output[-3000:]
    # Nothing was written: validation precedes every manifest.
    assert not any(Path(out_dir).rglob("*.yaml")), "manifests were written before validation failed"


@pytest.mark.parametrize("extra,variable,text", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_fails_naming_the_variable(run_playbook, tmp_path, extra, variable, text):
    out_dir = tmp_path / "out"
    result = run_playbook(SITE, inventory=MINIMAL, extra_vars={"matrix_stack_render_dir": str(out_dir), **extra})
    assert_failed_naming(result, variable, text, out_dir)


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_missing_required_value(run_playbook, tmp_path, missing):
    out_dir = tmp_path / "out"
    extra = {key: value for key, value in REQUIRED.items() if key != missing}
    result = run_playbook(SITE, inventory=None, extra_vars={"matrix_stack_hosts": "localhost",
                                                            "matrix_stack_render_dir": str(out_dir), **extra})
    assert_failed_naming(result, missing, "missing required arguments", out_dir)


def test_valid_input_passes(run_playbook, tmp_path):
    """The same harness accepts a valid input (so the failures above are about the input)."""
    out_dir = tmp_path / "out"
    result = run_playbook(SITE, inventory=None, extra_vars={"matrix_stack_hosts": "localhost",
                                                            "matrix_stack_render_dir": str(out_dir), **REQUIRED})
    assert result.rc == 0, result.stdout[-3000:]
    assert len(list(out_dir.rglob("*.yaml"))) > 20
