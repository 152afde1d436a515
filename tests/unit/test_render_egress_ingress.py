"""Rendering of the NetworkPolicy egress rules of external dependencies and of the Ingress body size.

The templates are rendered in process by ansible-core's Templar with the roles' defaults and vars and an
inventory (tests/helpers/stack_vars.py), the same inputs site.yml gives them. The validation pass makes sure
that every external dependency is covered (tests/unit/plugins/plugin_utils/test_validate.py); these tests
make sure the rule that covers it is rendered, on the right port.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from helpers import stack_vars  # noqa: E402
from helpers.stack_vars import controller_mode  # noqa: E402,F401  pylint: disable=unused-import

BODY_SIZE = "nginx.ingress.kubernetes.io/proxy-body-size"
NGINX_INC_BODY_SIZE = "nginx.org/client-max-body-size"


def egress(inventory, **extra):
    return stack_vars.render("networkpolicy/synapse.yaml.j2", inventory, **extra)["spec"]["egress"]


def rule_to(rules, peers):
    found = [rule for rule in rules if rule.get("to") == peers]
    assert len(found) == 1, rules
    return found[0]


def tcp(*ports):
    return [{"protocol": "TCP", "port": port} for port in ports]


def test_external_postgres_rule_on_its_port():
    rules = egress("external-postgres")
    assert rule_to(rules, [{"ipBlock": {"cidr": "10.20.0.5/32"}}])["ports"] == tcp(5433)
    assert not any("podSelector" in str(rule) for rule in rules), "no rule to an internal PostgreSQL in external mode"


def test_internal_postgres_rule_by_default():
    rules = egress("minimal")
    assert rule_to(rules, [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgres",
                                                            "app.kubernetes.io/instance": "matrix"}}}])["ports"] == tcp(5432)


def test_smtp_and_oidc_rules_on_their_ports():
    rules = egress("full")
    assert rule_to(rules, [{"ipBlock": {"cidr": "10.10.0.25/32"}}])["ports"] == tcp(587)
    keycloak = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keycloak"}}}]
    assert rule_to(rules, keycloak)["ports"] == tcp(443, 8443)


def test_smtp_rule_follows_the_smtp_port():
    peers = [{"ipBlock": {"cidr": "10.9.0.0/24"}}]
    rules = egress("minimal", synapse_email_enabled=True, synapse_email_smtp_host="mail.internal", synapse_email_smtp_port=2525,
                   networkpolicy_smtp_peers=peers)
    assert rule_to(rules, peers)["ports"] == tcp(2525)


def test_no_smtp_rule_without_email():
    peers = [{"ipBlock": {"cidr": "10.9.0.0/24"}}]
    assert not [rule for rule in egress("minimal", networkpolicy_smtp_peers=peers) if rule.get("to") == peers]


def test_public_dependencies_go_through_the_internet_rule():
    """A dependency declared in networkpolicy_public_hosts has no rule of its own: the internet rule reaches it."""
    rules = egress("sso-only")
    internet = [rule for rule in rules if rule.get("to", [{}])[0].get("ipBlock", {}).get("cidr") == "0.0.0.0/0"]
    assert len(internet) == 1 and "ports" not in internet[0]
    assert "10.0.0.0/8" in internet[0]["to"][0]["ipBlock"]["except"]
    assert not [rule for rule in egress("sso-only", networkpolicy_synapse_internet_egress=False)
                if rule.get("to", [{}])[0].get("ipBlock", {}).get("cidr") == "0.0.0.0/0"]


def test_backup_reaches_the_api_server_on_its_ports():
    rules = stack_vars.render("networkpolicy/backup.yaml.j2", "full")["spec"]["egress"]
    assert rule_to(rules, [{"ipBlock": {"cidr": "10.0.0.1/32"}}])["ports"] == tcp(443, 6443)


# ----- Ingress body size ------------------------------------------------------------------------

def annotations(template="synapse/ingress.yaml.j2", inventory="minimal", **extra):
    return stack_vars.render(template, inventory, **extra)["metadata"].get("annotations", {})


@pytest.mark.parametrize("template", ["synapse/ingress.yaml.j2", "synapse/ingress-wellknown.yaml.j2"])
def test_nginx_body_size_follows_the_default_upload_size(template):
    found = annotations(template)
    assert found[BODY_SIZE] == "50m" and found[NGINX_INC_BODY_SIZE] == "50m"  # synapse_max_upload_size: 50M


@pytest.mark.parametrize("size,expected", [("100M", "100m"), ("512K", "512k"), ("2G", "2g"), ("1T", "1024g"), (1048576, "1048576")])
def test_nginx_body_size_converts_synapse_sizes(size, expected):
    assert annotations(synapse_max_upload_size=size)[BODY_SIZE] == expected


def test_example_inventory_allows_its_uploads():
    found = annotations(inventory="example")
    assert found[BODY_SIZE] == "100m" and found["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"


def test_operator_annotation_wins():
    found = annotations(synapse_ingress_annotations={BODY_SIZE: "0"})
    assert found[BODY_SIZE] == "0" and found[NGINX_INC_BODY_SIZE] == "50m"


def test_traefik_gets_no_body_size_annotation():
    """Traefik has no request body limit unless a buffering middleware sets one (docs/tls-ingress.md)."""
    found = annotations(synapse_ingress_class_name="traefik", matrix_stack_cert_manager_issuer="le")
    assert found == {"cert-manager.io/cluster-issuer": "le"}
    spec = stack_vars.render("synapse/ingress.yaml.j2", synapse_ingress_class_name="traefik")["spec"]
    assert spec["ingressClassName"] == "traefik"


def test_element_ingress_has_no_body_size():
    """Element serves static files only; its Ingress keeps the operator's annotations alone."""
    assert BODY_SIZE not in annotations("element/ingress.yaml.j2")
