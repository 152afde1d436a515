# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rules of the networkpolicy role (its own inputs; external dependencies are in egress.py)."""

import ipaddress

from ansible_collections.matrix.stack.plugins.plugin_utils._validate import checks, kube

PEER_LISTS = ("networkpolicy_postgres_external_peers", "networkpolicy_smtp_peers", "networkpolicy_oidc_peers",
              "networkpolicy_kube_api_peers")


def rules(report):
    if report.usable("networkpolicy_ingress_namespace_selector"):
        selector = report["networkpolicy_ingress_namespace_selector"]
        if report.require(selector, "networkpolicy_ingress_namespace_selector",
                          "is empty: it would admit every namespace (its default is matrix_stack_ingress_namespace_selector)",
                          "the labels of the ingress controller's namespace, such as {kubernetes.io/metadata.name: ingress-nginx}"):
            kube.labels(report, "networkpolicy_ingress_namespace_selector", selector)
    for name in ("networkpolicy_ingress_pod_selector", "networkpolicy_monitoring_namespace_selector",
                 "networkpolicy_monitoring_pod_selector"):
        if report.usable(name):
            kube.labels(report, name, report[name])
    for name in ("networkpolicy_dns_namespace_selector", "networkpolicy_dns_pod_selector"):
        if report.usable(name):
            kube.labels(report, name, report[name], non_empty=True)
    for name, version in (("networkpolicy_internet_ipv4_except", 4), ("networkpolicy_internet_ipv6_except", 6)):
        if report.check_items(name, checks.cidr):
            for index, item in enumerate(report[name]):
                report.require(ipaddress.ip_network(item, strict=False).version == version and ipaddress.ip_network(item, strict=False)
                               .prefixlen > 0, f"{name}[{index}]", f"is not an IPv{version} range inside the internet range",
                               f"an IPv{version} CIDR range with a prefix length above 0")
    for name in PEER_LISTS:
        kube.peers(report, name)
    for name in ("networkpolicy_oidc_ports", "networkpolicy_kube_api_ports"):
        report.check_items(name, checks.port)
        report.require(not report.usable(name) or report[name], name, "is empty", "at least one port")
    kube.policy_rules(report, "networkpolicy_synapse_extra_egress", "to")
    kube.policy_rules(report, "networkpolicy_synapse_extra_ingress", "from")
    if report.get("backup_schedule_enabled") and report.usable("networkpolicy_kube_api_peers"):
        report.require(report["networkpolicy_kube_api_peers"], "networkpolicy_kube_api_peers",
                       "is empty while backup_schedule_enabled is true: the backup pods could not reach the Kubernetes API",
                       "the API server's endpoint addresses (kubectl get endpoints kubernetes -n default), "
                       "such as [{ipBlock: {cidr: 10.0.0.1/32}}]")
