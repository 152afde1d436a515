# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cross-role rule: every external dependency Synapse must reach is allowed by the NetworkPolicies.

The policies are default-deny. Synapse reaches a dependency (external PostgreSQL, SMTP, OIDC issuer and
endpoints) either through its peers list (``networkpolicy_*_peers``, on the dependency's port) or through the
internet rule (``networkpolicy_synapse_internet_egress``), which excludes the private ranges. A literal IP
address is checked against both; a DNS name cannot be (its addresses are unknown before it is resolved in the
cluster), so it needs its peers list, or to be declared public in ``networkpolicy_public_hosts``.
"""

import ipaddress
from urllib.parse import urlsplit

from ansible_collections.matrix.stack.plugins.plugin_utils._validate import synapse


def dependencies(report):
    """(source variable, host, port, peers variable, ports variable or None) of every configured external dependency."""
    found = []
    if report.get("postgres_mode") == "external" and report.usable("postgres_external_host", "postgres_external_port"):
        found.append(("postgres_external_host", report["postgres_external_host"], report["postgres_external_port"],
                      "networkpolicy_postgres_external_peers", None))
    if report.get("synapse_email_enabled") and report.usable("synapse_email_smtp_host", "synapse_email_smtp_port"):
        found.append(("synapse_email_smtp_host", report["synapse_email_smtp_host"], report["synapse_email_smtp_port"],
                      "networkpolicy_smtp_peers", None))
    if report.usable("synapse_oidc_providers"):
        for index, provider in enumerate(report["synapse_oidc_providers"]):
            for key, value in synapse.oidc_hosts(provider):
                try:
                    parts = urlsplit(value)
                    port = parts.port or (443 if parts.scheme == "https" else 80)
                except ValueError:
                    continue
                if parts.hostname:
                    found.append((f"synapse_oidc_providers[{index}].{key}", parts.hostname, port,
                                  "networkpolicy_oidc_peers", "networkpolicy_oidc_ports"))
    return found


def _address(host):
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _internet_allows(report, address):
    """True when the internet rule admits this literal address."""
    if not report.get("networkpolicy_synapse_internet_egress"):
        return False
    if address.version == 6:
        if not report.get("networkpolicy_ipv6"):
            return False
        excluded = report.get("networkpolicy_internet_ipv6_except") or []
    else:
        excluded = report.get("networkpolicy_internet_ipv4_except") or []
    return not any(address in ipaddress.ip_network(item, strict=False) for item in excluded)


def _peers_allow(peers, address):
    """False when every peer is an ipBlock and none holds the literal address; True otherwise (selectors: unknowable)."""
    if address is None or any("ipBlock" not in peer for peer in peers):
        return True
    for peer in peers:
        block = peer["ipBlock"]
        network = ipaddress.ip_network(block["cidr"], strict=False)
        if address.version == network.version and address in network and not any(
                address in ipaddress.ip_network(item, strict=False) for item in block.get("except") or []):
            return True
    return False


def rules(report):
    needed = ("networkpolicy_synapse_internet_egress", "networkpolicy_public_hosts", "networkpolicy_internet_ipv4_except",
              "networkpolicy_internet_ipv6_except", "networkpolicy_ipv6")
    if not report.usable(*needed):
        return
    public_hosts = {host.lower().rstrip(".") for host in report["networkpolicy_public_hosts"]}
    for source, host, port, peers_variable, ports_variable in dependencies(report):
        if not report.usable(peers_variable) or (ports_variable and not report.usable(ports_variable)):
            continue
        peers = report[peers_variable]
        address = _address(host)
        if address is not None and _internet_allows(report, address):
            continue
        if address is None and host.lower().rstrip(".") in public_hosts and report["networkpolicy_synapse_internet_egress"]:
            continue
        if peers:
            if not _peers_allow(peers, address):
                report.error(peers_variable, f"does not include {host}, the address of {source}",
                             f"an ipBlock holding {host}, such as [{{ipBlock: {{cidr: {host}/{address.max_prefixlen}}}}}]")
            elif ports_variable and port not in report[ports_variable]:
                report.error(ports_variable, f"does not include port {port} of {source} ({host})",
                             f"the ports Synapse connects to, such as {sorted(set(report[ports_variable]) | {port})}")
            continue
        report.error(peers_variable, _why(source, host, address, public_hosts),
                     _how(source, host, address, peers_variable))


def internet_only_features(report):
    """Features that only work through the internet rule: refused when it is off and no extra egress rule is given."""
    if report.get("networkpolicy_synapse_internet_egress", True) or report.get("networkpolicy_synapse_extra_egress"):
        return
    features = [("synapse_trusted_key_servers", bool(report.get("synapse_trusted_key_servers")),
                 "[] (no notary: keys are fetched from each server, which also needs egress)"),
                ("synapse_url_preview_enabled", bool(report.get("synapse_url_preview_enabled")), "false")]
    for variable, used, off in features:
        report.require(not used, variable, "needs egress to the internet, but networkpolicy_synapse_internet_egress is false "
                       "and networkpolicy_synapse_extra_egress is empty", f"{off}, or an egress rule in networkpolicy_synapse_extra_egress")


def _why(source, host, address, public_hosts):
    lead = f"is empty, so the NetworkPolicies block Synapse from {source} ({host})"
    if address is not None:
        return lead + ": a private or excluded address, outside the internet egress rule"
    if host.lower().rstrip(".") in public_hosts:
        return lead + ": it is listed in networkpolicy_public_hosts but networkpolicy_synapse_internet_egress is false"
    return lead + ": a DNS name, whose addresses the policies cannot know"


def _how(source, host, address, peers_variable):
    example = f"[{{ipBlock: {{cidr: {host}/{address.max_prefixlen}}}}}]" if address is not None else \
        "[{ipBlock: {cidr: 10.0.12.7/32}}] or [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: <namespace>}}}]"
    allowed = f"set {peers_variable} to the peers of {host}, such as {example}"
    if address is None:
        allowed += f"; or, when {host} resolves to public addresses only, list it in networkpolicy_public_hosts"
    return allowed
