# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rules of the postgres role."""

import re

from ansible_collections.matrix.stack.plugins.plugin_utils._validate import checks, kube

# PostgreSQL majors the internal StatefulSet supports (image tag <major>[.<minor>][-<variant>]).
SUPPORTED_MAJORS = (16, 17)
# Settings the role computes from the memory limit or needs for itself; overriding them is allowed.
_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")


def rules(report):
    for name in ("postgres_database", "postgres_user"):
        report.check(name, _identifier)
    if report.get("postgres_mode") == "internal":
        _internal(report)
    elif report.get("postgres_mode") == "external":
        _external(report)


def _identifier(value):
    if isinstance(value, str) and re.match(r"^[a-z_][a-z0-9_]{0,62}$", value):
        return None
    return "is not a plain SQL identifier", "lowercase letters, digits and '_', not starting with a digit, at most 63 characters"


def _major(value):
    majors = " or ".join(str(major) for major in SUPPORTED_MAJORS)
    match = re.match(r"^([0-9]+)([.-].*)?$", value) if isinstance(value, str) else None
    if match and int(match.group(1)) in SUPPORTED_MAJORS and checks.image_tag(value) is None:
        return None
    return f"is not a PostgreSQL {majors} image tag", f"a tag of PostgreSQL {majors}, such as {SUPPORTED_MAJORS[-1]}.6-bookworm"


def _memory_for_settings(value):
    if re.match(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$", str(value)):
        return None
    return "is not a memory size the PostgreSQL settings can be computed from", "a number with Ki, Mi, Gi, Ti, k, M, G or T, such as 1Gi"


def _internal(report):
    report.check("postgres_image_repository", checks.image_repository)
    report.check("postgres_image_tag", _major)
    report.check("postgres_image_digest", checks.optional(checks.digest))
    report.check("postgres_storage_class", checks.optional(checks.dns_subdomain))
    report.check("postgres_storage_size", checks.quantity)
    if kube.resources(report, "postgres_resources", memory_limit_minimum="256Mi"):
        # The server settings are computed from the limit (vars/main.yml __postgres_memory_mib): it must be in a form that parses.
        report.check("postgres_resources", _memory_for_settings, value=report["postgres_resources"]["limits"]["memory"],
                     label="postgres_resources.limits.memory")
    report.check("postgres_max_connections", checks.integer, 20, 10000)
    if report.usable("postgres_extra_settings"):
        for name, value in report["postgres_extra_settings"].items():
            path = f"postgres_extra_settings.{name}"
            if not isinstance(name, str) or not _SETTING_NAME.match(name):
                report.error(path, "is not a PostgreSQL setting name", "lowercase letters, digits and '_' (such as random_page_cost)")
            elif isinstance(value, (dict, list)) or value is None or "\n" in str(value):
                report.error(path, "is not a single value", "a string or number such as '1.1' or 200")
    report.check("postgres_run_as_user", checks.uid)
    report.check("postgres_run_as_group", checks.uid)
    kube.node_selector(report, "postgres_node_selector")
    kube.tolerations(report, "postgres_tolerations")


def _external(report):
    report.check_set("postgres_external_host", "postgres_mode is external", "the host name or address of the PostgreSQL server",
                     checks.hostname)
    report.check("postgres_external_port", checks.port)
    report.check_set("postgres_external_password_secret_name", "postgres_mode is external",
                     "the name of an existing Secret holding the password of postgres_user", checks.dns_subdomain)
    report.check("postgres_external_password_secret_key", checks.secret_key)
