# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rules of the shared settings (roles/matrix_stack)."""

import os
import re

from ansible_collections.matrix.stack.plugins.plugin_utils._validate import checks, kube


# Namespaces the cluster's own components live in.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def rules(report):
    if report.check("matrix_stack_namespace", checks.dns_label) and report.get("matrix_stack_create_namespace"):
        namespace = report["matrix_stack_namespace"]
        report.require(namespace not in SYSTEM_NAMESPACES and not namespace.startswith("kube-"), "matrix_stack_namespace",
                       f"is {namespace}, a namespace of the cluster itself: it would be relabelled Pod Security restricted",
                       "a namespace of the stack's own, such as matrix")
    report.check("matrix_stack_instance", _instance)
    report.check("matrix_stack_pod_security_version", _pss_version)
    if report.usable("matrix_stack_extra_labels"):
        kube.labels(report, "matrix_stack_extra_labels", report["matrix_stack_extra_labels"])
    report.check("matrix_stack_field_manager", _field_manager)
    report.check("matrix_stack_wait_timeout", checks.integer, 1, 86400)
    report.check_items("matrix_stack_image_pull_secrets", checks.dns_subdomain)
    report.check("matrix_stack_ingress_class_name", checks.optional(checks.dns_subdomain))
    if report.usable("matrix_stack_ingress_annotations"):
        kube.annotations(report, "matrix_stack_ingress_annotations", report["matrix_stack_ingress_annotations"])
    report.check("matrix_stack_cert_manager_issuer", checks.optional(checks.dns_subdomain))
    for name in ("matrix_stack_ingress_namespace_selector", "matrix_stack_monitoring_namespace_selector"):
        if report.usable(name):
            kube.labels(report, name, report[name])
    if report.usable("matrix_stack_backup_pod_labels"):
        kube.labels(report, "matrix_stack_backup_pod_labels", report["matrix_stack_backup_pod_labels"], non_empty=True)
    if report.usable("matrix_stack_kubeconfig", "matrix_stack_render_dir") and not report["matrix_stack_render_dir"]:
        path = report["matrix_stack_kubeconfig"]
        report.require(not path or os.path.isfile(os.path.expanduser(path)), "matrix_stack_kubeconfig",
                       f"names a file that does not exist ({path})", "the path of a kubeconfig file, or empty for the default")


def _instance(value):
    if isinstance(value, str) and re.match(r"^[a-z]([-a-z0-9]{0,28}[a-z0-9])?$", value):
        return None
    return "is not a short DNS-1123 label", "lowercase letters, digits and '-', starting with a letter, at most 30 characters"


def _pss_version(value):
    if isinstance(value, str) and re.match(r"^(latest|v1\.[0-9]+)$", value):
        return None
    return "is not a Pod Security Standards version", "latest or v1.<minor>, such as v1.30"


def _field_manager(value):
    if isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
        return None
    return "is not a field manager name", "1 to 128 printable characters"
