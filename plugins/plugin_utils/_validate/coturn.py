# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rules of the coturn role."""

import ipaddress
import re

from ansible_collections.matrix.stack.plugins.plugin_utils._validate import checks, kube

PORTS = ("coturn_listening_port", "coturn_tls_port", "coturn_relay_min_port", "coturn_relay_max_port", "coturn_metrics_port")
NODE_PORTS = (30000, 32767)
MAX_RELAY_PORTS = 1000
# turnserver.conf options that carry a secret or enable static users (the file is a ConfigMap).
SECRET_OPTIONS = ("static-auth-secret", "user", "lt-cred-mech", "cli-password", "secret-key-file")


def rules(report):
    report.check("coturn_image_repository", checks.image_repository)
    report.check("coturn_image_tag", checks.image_tag)
    report.check("coturn_image_digest", checks.optional(checks.digest))
    report.check("coturn_public_host", checks.hostname)
    report.check("coturn_external_ip", _external_ip)
    report.check("coturn_realm", _realm)
    for name in PORTS:
        report.check(name, checks.port)
    _ports(report)
    report.check("coturn_tls_secret_name", checks.optional(checks.dns_subdomain))
    report.check("coturn_load_balancer_ip", checks.optional(checks.ip_address))
    report.check_items("coturn_load_balancer_source_ranges", checks.cidr)
    if report.usable("coturn_service_annotations"):
        kube.annotations(report, "coturn_service_annotations", report["coturn_service_annotations"])
    report.check("coturn_user_quota", checks.integer, 0, 100000)
    report.check("coturn_total_quota", checks.integer, 0, 1000000)
    if report.usable("coturn_user_quota", "coturn_total_quota"):
        user, total = report["coturn_user_quota"], report["coturn_total_quota"]
        report.require(not (user and total and user > total), "coturn_user_quota", f"({user}) is above coturn_total_quota ({total})",
                       "a per-user quota not above the total quota (0 means unlimited)")
    report.check("coturn_max_bps", checks.integer, 0)
    report.check("coturn_credential_lifetime", checks.synapse_duration)
    report.check_items("coturn_denied_peer_ips", _peer_range)
    report.check_items("coturn_allowed_peer_ips", _peer_range)
    if report.usable("coturn_extra_config"):
        for index, line in enumerate(report["coturn_extra_config"]):
            option = line.strip().lstrip("-").split("=")[0].split()[0] if line.strip() else ""
            report.require(option not in SECRET_OPTIONS, f"coturn_extra_config[{index}]",
                           f"sets {option}: the configuration is stored in a ConfigMap",
                           "options without secrets; the shared secret is managed by the role")
            report.require("\n" not in line, f"coturn_extra_config[{index}]", "contains a newline", "one option per element")
    kube.resources(report, "coturn_resources")
    report.check("coturn_run_as_user", checks.uid)
    report.check("coturn_run_as_group", checks.uid)
    kube.node_selector(report, "coturn_node_selector")
    kube.tolerations(report, "coturn_tolerations")


def _external_ip(value):
    allowed = "the public IP address coturn advertises, such as 203.0.113.10, or public/private"
    parts = value.split("/") if isinstance(value, str) else []
    if 1 <= len(parts) <= 2 and all(checks.ip_address(part) is None for part in parts):
        return None
    return "is not an IP address (or public/private pair)", allowed


def _realm(value):
    if isinstance(value, str) and re.match(r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$", value):
        return None
    return "is not a realm", "a domain-like name such as example.com"


def _peer_range(value):
    parts = value.split("-") if isinstance(value, str) and value.count("-") <= 1 else [None]
    try:
        addresses = [ipaddress.ip_address(part) for part in parts]
    except ValueError:
        addresses = []
    if addresses and (len(addresses) == 1 or (addresses[0].version == addresses[1].version and addresses[0] <= addresses[1])):
        return None
    return "is not an address or address range", "an IP address or a range first-last, such as 10.0.0.0-10.255.255.255"


def _ports(report):
    if not report.usable(*PORTS, "coturn_service_type", "coturn_tls_secret_name", "coturn_metrics_enabled"):
        return
    low, high = report["coturn_relay_min_port"], report["coturn_relay_max_port"]
    if not report.require(low <= high and high - low < MAX_RELAY_PORTS, "coturn_relay_min_port",
                          f"and coturn_relay_max_port ({low}..{high}) do not form a range of 1 to {MAX_RELAY_PORTS} ports",
                          f"min <= max and at most {MAX_RELAY_PORTS} ports (every relay port is a Service port)"):
        return
    tls = bool(report["coturn_tls_secret_name"])
    listeners = [("coturn_listening_port", report["coturn_listening_port"])]
    listeners += [("coturn_tls_port", report["coturn_tls_port"])] if tls else []
    listeners += [("coturn_metrics_port", report["coturn_metrics_port"])] if report["coturn_metrics_enabled"] else []
    for name, number in listeners:
        report.require(not low <= number <= high, name, f"({number}) lies in the relay range {low}..{high}",
                       "a port outside coturn_relay_min_port..coturn_relay_max_port")
    for index, (name, number) in enumerate(listeners):
        for other, other_number in listeners[index + 1:]:
            report.require(number != other_number, other, f"({other_number}) is also {name}", "distinct ports")
    if report["coturn_service_type"] != "NodePort":
        return
    first, last = NODE_PORTS
    for name in ("coturn_relay_min_port", "coturn_relay_max_port"):
        report.require(first <= report[name] <= last, name, f"({report[name]}) is outside the NodePort range (relay ports are "
                       "exposed as node ports 1:1)", f"{first}-{last} with coturn_service_type NodePort")
    node_ports = [("coturn_node_port", report.get("coturn_node_port"))]
    node_ports += [("coturn_tls_node_port", report.get("coturn_tls_node_port"))] if tls else []
    for name, number in node_ports:
        if not report.check(name, checks.integer, first, last):
            continue
        report.require(not low <= number <= high, name, f"({number}) lies in the relay range {low}..{high}",
                       f"a node port in {first}-{last} outside the relay range")
    if tls and report.usable("coturn_node_port", "coturn_tls_node_port"):
        report.require(report["coturn_node_port"] != report["coturn_tls_node_port"], "coturn_tls_node_port",
                       "equals coturn_node_port", "two different node ports")
