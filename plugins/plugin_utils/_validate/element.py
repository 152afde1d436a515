# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rules of the element role."""

import re

from ansible_collections.matrix.stack.plugins.plugin_utils._validate import checks, kube

BUILTIN_THEMES = ("light", "dark", "light-high-contrast")


def rules(report):
    report.check("element_image_repository", checks.image_repository)
    report.check("element_version", checks.version, r"^[0-9]+\.[0-9]+\.[0-9]+(-rc\.?[0-9]+)?$", "1.12.30")
    report.check("element_image_digest", checks.optional(checks.digest))
    report.check("element_public_url", checks.url, ("https", "http"), False)
    _themes(report)
    for name in ("element_logo_url", "element_background_url"):
        report.check(name, checks.optional(_asset_url))
    if report.usable("element_auth_footer_links"):
        for index, link in enumerate(report["element_auth_footer_links"]):
            path = f"element_auth_footer_links[{index}]"
            report.require(isinstance(link.get("text"), str) and link.get("text"), f"{path}.text", "is missing", "the link text")
            report.check(path, checks.url, value=link.get("url"), label=f"{path}.url")
    report.check_items("element_room_directory_servers", checks.server_name)
    if report.usable("element_security_headers"):
        for name, value in report["element_security_headers"].items():
            report.require(isinstance(name, str) and re.match(r"^[A-Za-z0-9-]+$", name), f"element_security_headers.{name}",
                           "is not an HTTP header name", "letters, digits and '-'")
            # The template quotes the value and escapes '"', '\\' and '$' for nginx; braces and newlines stay out.
            report.require(isinstance(value, (str, int)) and not re.search(r"[\r\n{}]", str(value)),
                           f"element_security_headers.{name}", "is not a single-line header value",
                           "a string without newlines or braces")
    report.check("element_ingress_class_name", checks.optional(checks.dns_subdomain))
    report.check("element_ingress_tls_secret_name", checks.dns_subdomain)
    if report.usable("element_ingress_annotations"):
        kube.annotations(report, "element_ingress_annotations", report["element_ingress_annotations"])
    kube.resources(report, "element_resources")
    report.check("element_replicas", checks.integer, 1, 100)
    report.check("element_run_as_user", checks.uid)
    report.check("element_run_as_group", checks.uid)
    kube.node_selector(report, "element_node_selector")
    kube.tolerations(report, "element_tolerations")


def _asset_url(value):
    if isinstance(value, str) and (checks.url(value) is None or re.match(r"^/?[A-Za-z0-9._~/-]+$", value)):
        return None
    return "is not a URL or path", "an http(s) URL or a path served by Element, such as https://example.com/logo.svg"


def _themes(report):
    names = []
    if report.usable("element_custom_themes"):
        for index, theme in enumerate(report["element_custom_themes"]):
            path = f"element_custom_themes[{index}]"
            name = theme.get("name")
            if report.require(isinstance(name, str) and name, f"{path}.name", "is missing", "the theme's name"):
                names.append(name)
            report.require(isinstance(theme.get("colors"), dict), f"{path}.colors", "is missing or not a mapping",
                           "a mapping of Element colour names to CSS colours, such as {accent-color: '#0dbd8b'}")
    if report.usable("element_default_theme") and report.usable("element_custom_themes"):
        allowed = list(BUILTIN_THEMES) + [f"custom-{name}" for name in names]
        report.check("element_default_theme", checks.one_of, allowed)
