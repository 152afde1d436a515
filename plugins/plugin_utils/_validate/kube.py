# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of the Kubernetes-shaped inputs: labels, annotations, resources, tolerations, NetworkPolicy peers and rules.

Each function reports into a ``Report`` under the variable name (and path) it is given, so the message
points at the exact element, e.g. ``networkpolicy_smtp_peers[0].ipBlock.cidr``.
"""

import ipaddress

from ansible_collections.matrix.stack.plugins.plugin_utils._validate import checks
from ansible_collections.matrix.stack.plugins.plugin_utils._validate.report import shown

_QUALIFIED = "a label key (optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.')"
_LABEL_VALUE = "at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (or empty)"


def qualified_name(key):
    if not isinstance(key, str):
        return False
    prefix, name = key.rsplit("/", 1) if "/" in key else ("", key)
    if prefix and (len(prefix) > 253 or not checks.DNS_SUBDOMAIN.match(prefix)):
        return False
    return bool(checks.LABEL_NAME.match(name))


def labels(report, variable, value, non_empty=False):
    """A mapping of label keys to label values."""
    if not isinstance(value, dict):
        report.error(variable, "is not a mapping of labels", "a mapping such as {app.example.com/team: chat}")
        return False
    ok = report.require(value or not non_empty, variable, "is empty: it would select everything",
                        "at least one label")
    for key, item in value.items():
        if not qualified_name(key):
            ok = report.require(False, f"{variable}.{key}", "is not a valid label key", _QUALIFIED)
        elif isinstance(item, (dict, list)) or item is None or not checks.LABEL_VALUE.match(str(item)):
            ok = report.require(False, f"{variable}.{key}", f"has an invalid label value ({shown(item)})", _LABEL_VALUE)
    return ok


def annotations(report, variable, value):
    """A mapping of annotation keys to string values."""
    ok = True
    for key, item in value.items():
        if not qualified_name(key):
            ok = report.require(False, f"{variable}.{key}", "is not a valid annotation key", _QUALIFIED)
        elif not isinstance(item, (str, int, float)) or isinstance(item, bool):
            ok = report.require(False, f"{variable}.{key}", f"is {shown(item)}", "a string value (quote numbers and booleans)")
    return ok


_RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")


def resources(report, variable, memory_limit_minimum=None):
    """Container resources: requests/limits of quantities, a memory limit, requests not above limits."""
    if not report.usable(variable):
        return False
    value = report[variable]
    ok = True
    for key in value:
        if key not in ("requests", "limits", "claims"):
            ok = report.require(False, f"{variable}.{key}", "is not a resources field", "requests and limits")
    parsed = {}
    for section in ("requests", "limits"):
        part = value.get(section) or {}
        if not isinstance(part, dict):
            ok = report.require(False, f"{variable}.{section}", "is not a mapping", "a mapping such as {memory: 1Gi}")
            continue
        for name, amount in part.items():
            path = f"{variable}.{section}.{name}"
            if name not in _RESOURCE_NAMES and not str(name).startswith("hugepages-") and "/" not in str(name):
                ok = report.require(False, path, "is not a resource name", "cpu, memory, ephemeral-storage, hugepages-<size> or a domain-prefixed name")
            elif report.check(variable, checks.quantity, value=amount, label=path):
                parsed[(section, name)] = checks.quantity_value(amount)
            else:
                ok = False
    memory = parsed.get(("limits", "memory"))
    if not isinstance(value.get("limits"), dict) or "memory" not in value["limits"]:
        ok = report.require(False, f"{variable}.limits.memory", "is missing: every pod has a memory limit", "a quantity such as 1Gi")
    elif memory is not None and memory_limit_minimum and memory < checks.quantity_value(memory_limit_minimum):
        ok = report.require(False, f"{variable}.limits.memory", f"is below {memory_limit_minimum}", f"at least {memory_limit_minimum}")
    for (section, name), amount in parsed.items():
        limit = parsed.get(("limits", name))
        if section == "requests" and limit is not None and amount > limit:
            ok = report.require(False, f"{variable}.requests.{name}", f"is above {variable}.limits.{name}",
                                "a request not larger than the limit")
    return ok


_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}


def tolerations(report, variable):
    if not report.usable(variable):
        return False
    ok = True
    for index, item in enumerate(report[variable]):
        path = f"{variable}[{index}]"
        unknown = sorted(set(item) - _TOLERATION_KEYS)
        if unknown:
            ok = report.require(False, path, f"has unknown keys {unknown}", ", ".join(sorted(_TOLERATION_KEYS)))
        operator = item.get("operator", "Equal")
        ok = report.check(variable, checks.one_of, ("Equal", "Exists"), value=operator, label=f"{path}.operator") and ok
        if "effect" in item:
            ok = report.check(variable, checks.one_of, ("NoSchedule", "PreferNoSchedule", "NoExecute"),
                              value=item["effect"], label=f"{path}.effect") and ok
        if operator == "Exists" and item.get("value"):
            ok = report.require(False, f"{path}.value", "is set with operator Exists", "no value with Exists") and ok
        if "tolerationSeconds" in item:
            ok = report.check(variable, checks.integer, value=item["tolerationSeconds"], label=f"{path}.tolerationSeconds") and ok
    return ok


def node_selector(report, variable):
    return report.usable(variable) and labels(report, variable, report[variable])


def label_selector(report, path, value):
    """A LabelSelector: matchLabels and/or matchExpressions."""
    if not isinstance(value, dict):
        return report.require(False, path, "is not a label selector", "{matchLabels: {...}} and/or {matchExpressions: [...]}")
    ok = True
    for key in value:
        if key not in ("matchLabels", "matchExpressions"):
            ok = report.require(False, f"{path}.{key}", "is not a label selector field", "matchLabels, matchExpressions")
    if "matchLabels" in value:
        ok = labels(report, f"{path}.matchLabels", value["matchLabels"]) and ok
    for index, expression in enumerate(value.get("matchExpressions") or []):
        where = f"{path}.matchExpressions[{index}]"
        if not isinstance(expression, dict) or not qualified_name(expression.get("key")):
            ok = report.require(False, where, "needs a valid key", _QUALIFIED)
            continue
        operator = expression.get("operator")
        ok = report.check(path, checks.one_of, ("In", "NotIn", "Exists", "DoesNotExist"), value=operator,
                          label=f"{where}.operator") and ok
        values = expression.get("values") or []
        if operator in ("In", "NotIn") and not values:
            ok = report.require(False, f"{where}.values", "is empty with operator In/NotIn", "at least one value")
    return ok


def ip_block(report, path, value):
    if not isinstance(value, dict) or "cidr" not in value:
        return report.require(False, path, "needs a cidr", "{cidr: 10.0.0.5/32, except: [...]}")
    ok = True
    for key in value:
        if key not in ("cidr", "except"):
            ok = report.require(False, f"{path}.{key}", "is not an ipBlock field", "cidr, except")
    if not report.check(path, checks.cidr, value=value["cidr"], label=f"{path}.cidr"):
        return False
    network = ipaddress.ip_network(value["cidr"], strict=False)
    for index, excluded in enumerate(value.get("except") or []):
        where = f"{path}.except[{index}]"
        if report.check(path, checks.cidr, value=excluded, label=where):
            inner = ipaddress.ip_network(excluded, strict=False)
            if inner.version != network.version or not inner.subnet_of(network) or inner == network:
                ok = report.require(False, where, f"is not strictly inside {value['cidr']}", "a range strictly inside cidr")
        else:
            ok = False
    return ok


_PEER_KEYS = ("ipBlock", "namespaceSelector", "podSelector")


def peer(report, path, value):
    """A NetworkPolicyPeer."""
    if not isinstance(value, dict) or not value:
        return report.require(False, path, "is not a NetworkPolicyPeer",
                              "a mapping with ipBlock, or namespaceSelector and/or podSelector")
    ok = True
    for key in value:
        if key not in _PEER_KEYS:
            ok = report.require(False, f"{path}.{key}", "is not a NetworkPolicyPeer field", ", ".join(_PEER_KEYS))
    if "ipBlock" in value:
        if len(value) > 1:
            ok = report.require(False, path, "combines ipBlock with selectors", "ipBlock alone, or selectors")
        ok = ip_block(report, f"{path}.ipBlock", value["ipBlock"]) and ok
    for key in ("namespaceSelector", "podSelector"):
        if key in value:
            ok = label_selector(report, f"{path}.{key}", value[key]) and ok
    return ok


def peers(report, variable):
    if not report.usable(variable):
        return False
    ok = True
    for index, item in enumerate(report[variable]):
        ok = peer(report, f"{variable}[{index}]", item) and ok
    return ok


def policy_port(report, path, value):
    if not isinstance(value, dict):
        return report.require(False, path, "is not a NetworkPolicyPort", "{protocol: TCP, port: 443}")
    ok = True
    for key in value:
        if key not in ("protocol", "port", "endPort"):
            ok = report.require(False, f"{path}.{key}", "is not a NetworkPolicyPort field", "protocol, port, endPort")
    if "protocol" in value:
        ok = report.check(path, checks.one_of, ("TCP", "UDP", "SCTP"), value=value["protocol"], label=f"{path}.protocol") and ok
    port = value.get("port")
    if port is not None and not (isinstance(port, str) and checks.DNS_LABEL.match(port) and len(port) <= 15):
        ok = report.check(path, checks.port, value=port, label=f"{path}.port") and ok
    if "endPort" in value:
        if report.check(path, checks.port, value=value["endPort"], label=f"{path}.endPort"):
            if not checks.is_int(port) or value["endPort"] < port:
                ok = report.require(False, f"{path}.endPort", "needs a numeric port not above it", "endPort >= port")
        else:
            ok = False
    return ok


def policy_rules(report, variable, direction):
    """NetworkPolicyEgressRule (direction "to") or NetworkPolicyIngressRule ("from") list."""
    if not report.usable(variable):
        return False
    ok = True
    for index, rule in enumerate(report[variable]):
        path = f"{variable}[{index}]"
        for key in rule:
            if key not in (direction, "ports"):
                ok = report.require(False, f"{path}.{key}", "is not a field of this rule", f"{direction}, ports")
        for number, item in enumerate(rule.get(direction) or []):
            ok = peer(report, f"{path}.{direction}[{number}]", item) and ok
        for number, item in enumerate(rule.get("ports") or []):
            ok = policy_port(report, f"{path}.ports[{number}]", item) and ok
    return ok
