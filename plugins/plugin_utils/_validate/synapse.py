# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rules of the synapse role."""

import re

from ansible_collections.matrix.stack.plugins.plugin_utils._validate import checks, kube

# Keys of synapse_extra_config that would put a secret into the ConfigMap or fight a managed block.
FORBIDDEN_EXTRA_KEYS = (
    "macaroon_secret_key", "registration_shared_secret", "form_secret", "turn_shared_secret", "signing_key",
    "worker_replication_secret", "recaptcha_private_key", "redis", "database", "oidc_providers", "listeners",
)
# Keys of synapse_extra_config that other settings or the deployment depend on, and the variable that sets each.
MANAGED_EXTRA_KEYS = {
    "server_name": "synapse_server_name", "public_baseurl": "synapse_public_baseurl",
    "max_upload_size": "synapse_max_upload_size (the Ingress body size follows it)",
    "media_store_path": "the media volume (fixed path)", "signing_key_path": "the Synapse Secret (fixed path)",
}
# Attributes of urllib.parse.urlsplit() results that url_preview_url_blacklist entries may match.
URL_BLACKLIST_KEYS = ("scheme", "netloc", "path", "params", "query", "fragment", "username", "password", "hostname", "port")
# Keys of an OIDC provider entry that carry a secret inline (refused: it would land in the ConfigMap).
OIDC_INLINE_SECRETS = ("client_secret", "client_secret_path")
# Endpoints Synapse itself calls (the authorization endpoint is visited by the browser).
OIDC_SERVER_ENDPOINTS = ("token_endpoint", "userinfo_endpoint", "jwks_uri")
OIDC_BROWSER_ENDPOINTS = ("authorization_endpoint",)
NGINX_BODY_SIZE = "nginx.ingress.kubernetes.io/proxy-body-size"
_NGINX_SIZE = re.compile(r"^([0-9]+)([kKmMgG]?)$")


def rules(report):
    report.check("synapse_server_name", checks.server_name)
    report.check("synapse_public_baseurl", checks.url, ("https", "http"), False)
    report.check("synapse_image_repository", checks.image_repository)
    report.check("synapse_version", checks.version, r"^[0-9]+\.[0-9]+\.[0-9]+(rc[0-9]+)?$", "1.163.2")
    report.check("synapse_image_digest", checks.optional(checks.digest))
    for name in ("synapse_max_upload_size", "synapse_max_image_pixels"):
        report.check(name, checks.synapse_size)
    report.check("synapse_media_storage_class", checks.optional(checks.dns_subdomain))
    report.check("synapse_media_storage_size", checks.quantity)
    report.check("synapse_media_retention_local_lifetime", checks.optional(checks.synapse_duration))
    report.check("synapse_media_retention_remote_lifetime", checks.optional(checks.synapse_duration))
    for name in ("synapse_url_preview_ip_range_blacklist", "synapse_url_preview_ip_range_whitelist",
                 "synapse_ip_range_blacklist", "synapse_ip_range_whitelist"):
        report.check_items(name, checks.cidr)
    _url_blacklist(report)
    _registration(report)
    _oidc(report)
    _email(report)
    _turn(report)
    _trusted_key_servers(report)
    report.check("synapse_metrics_port", checks.port)
    if report.usable("synapse_metrics_port") and report["synapse_metrics_port"] == 8008:
        report.error("synapse_metrics_port", "is 8008, the port of the client/federation listener",
                     "any other port from 1 to 65535")
    _extra_config(report)
    kube.resources(report, "synapse_resources")
    report.check("synapse_run_as_user", checks.uid)
    report.check("synapse_run_as_group", checks.uid)
    kube.node_selector(report, "synapse_node_selector")
    kube.tolerations(report, "synapse_tolerations")
    _ingress(report)


def _url_blacklist(report):
    if not report.usable("synapse_url_preview_url_blacklist"):
        return
    for index, entry in enumerate(report["synapse_url_preview_url_blacklist"]):
        path = f"synapse_url_preview_url_blacklist[{index}]"
        unknown = sorted(set(entry) - set(URL_BLACKLIST_KEYS))
        report.require(entry and not unknown, path, f"has unknown or no URL parts {unknown}", ", ".join(URL_BLACKLIST_KEYS))
        for key, pattern in entry.items():
            report.require(isinstance(pattern, str), f"{path}.{key}", "is not a glob or regular expression string",
                           "a string such as '*.example.com' or '^https?://'")


def _registration(report):
    names = ("synapse_registration_enabled", "synapse_registration_require_email", "synapse_registration_requires_token",
             "synapse_registration_allow_unverified", "synapse_email_enabled", "synapse_password_login_enabled")
    if not report.usable(*names):
        return
    enabled, email, token, unverified, email_on, password = (report[name] for name in names)
    report.require(not enabled or email or token or unverified, "synapse_registration_allow_unverified",
                   "is false while synapse_registration_enabled is true without verification (Synapse refuses to start)",
                   "set synapse_registration_require_email or synapse_registration_requires_token, "
                   "or accept open registration with synapse_registration_allow_unverified: true")
    report.require(not email or email_on, "synapse_email_enabled",
                   "is false while synapse_registration_require_email is true", "synapse_email_enabled: true with an SMTP server")
    report.require(password or not enabled, "synapse_registration_enabled",
                   "is true while synapse_password_login_enabled is false (SSO only): password registration cannot work",
                   "false; SSO users are registered on their first login")
    if report.usable("synapse_oidc_providers"):
        report.require(password or report["synapse_oidc_providers"], "synapse_oidc_providers",
                       "is empty while synapse_password_login_enabled is false: nobody could log in",
                       "at least one provider, or synapse_password_login_enabled: true")


def oidc_hosts(provider):
    """(key, URL) pairs of an OIDC provider that Synapse itself contacts."""
    found = []
    if provider.get("discover", True) or not any(provider.get(key) for key in OIDC_SERVER_ENDPOINTS):
        found.append(("issuer", provider.get("issuer")))
    found.extend((key, provider[key]) for key in OIDC_SERVER_ENDPOINTS if provider.get(key))
    return [(key, value) for key, value in found if isinstance(value, str)]


def _oidc(report):
    if not report.usable("synapse_oidc_providers"):
        return
    seen = {}
    for index, provider in enumerate(report["synapse_oidc_providers"]):
        path = f"synapse_oidc_providers[{index}]"
        idp_id = provider.get("idp_id")
        if not report.check(path, _idp_id, value=idp_id, label=f"{path}.idp_id"):
            pass
        elif idp_id in seen:
            report.error(f"{path}.idp_id", f"repeats synapse_oidc_providers[{seen[idp_id]}].idp_id ({idp_id})", "unique idp_id values")
        else:
            seen[idp_id] = index
        report.check(path, checks.url, ("https",), value=provider.get("issuer"), label=f"{path}.issuer")
        for key in OIDC_SERVER_ENDPOINTS + OIDC_BROWSER_ENDPOINTS:
            if key in provider:
                report.check(path, checks.url, ("https",), value=provider[key], label=f"{path}.{key}")
        report.require(isinstance(provider.get("client_id"), str) and provider.get("client_id"), f"{path}.client_id",
                       "is missing", "the client ID registered at the identity provider")
        for key in OIDC_INLINE_SECRETS:
            report.require(key not in provider, f"{path}.{key}", "is set inline: the secret would be stored in a ConfigMap",
                           "client_secret_secret_name (and client_secret_secret_key): an existing Secret with the client secret")
        secret_name = provider.get("client_secret_secret_name", "")
        if secret_name:
            report.check(path, checks.dns_subdomain, value=secret_name, label=f"{path}.client_secret_secret_name")
            report.check(path, checks.secret_key, value=provider.get("client_secret_secret_key", "client-secret"),
                         label=f"{path}.client_secret_secret_key")
        elif not any(key in provider for key in OIDC_INLINE_SECRETS):
            report.require(provider.get("client_auth_method") == "none" or "client_secret_jwt_key" in provider,
                           f"{path}.client_secret_secret_name", "is missing",
                           "the name of an existing Secret with the client secret (or client_auth_method: none)")
        scopes = provider.get("scopes", ["openid"])
        report.require(isinstance(scopes, list) and all(isinstance(scope, str) for scope in scopes) and "openid" in scopes,
                       f"{path}.scopes", "is not a list of scopes including openid", "a list such as [openid, profile, email]")
        mapping = provider.get("user_mapping_provider", {})
        report.require(isinstance(mapping, dict) and isinstance(mapping.get("config", {}), dict),
                       f"{path}.user_mapping_provider", "is not a mapping with a config mapping",
                       "{config: {localpart_template: ..., display_name_template: ...}}")


def _idp_id(value):
    if isinstance(value, str) and re.match(r"^[A-Za-z0-9._~-]{1,200}$", value):
        return None
    return "is not an identity provider ID", "1 to 200 letters, digits, '.', '_', '~' or '-'"


def _email(report):
    if not report.usable("synapse_email_enabled") or not report["synapse_email_enabled"]:
        return
    report.check_set("synapse_email_smtp_host", "synapse_email_enabled is true", "the SMTP server's host name", checks.hostname)
    report.check("synapse_email_smtp_port", checks.port)
    if report.get("synapse_email_smtp_password_secret_name"):
        report.check("synapse_email_smtp_password_secret_name", checks.dns_subdomain)
        report.check("synapse_email_smtp_password_secret_key", checks.secret_key)
        report.check_set("synapse_email_smtp_user", "synapse_email_smtp_password_secret_name is set", "the SMTP user name")
    report.check("synapse_email_notif_from", _mail_from)


def _mail_from(value):
    if isinstance(value, str) and re.match(r"^([^<>@\n]*<[^<>@\s]+@[^<>@\s]+>|[^<>@\s]+@[^<>@\s]+)$", value.strip()):
        return None
    return "is not a mail address", "an address such as noreply@example.com or \"Example <noreply@example.com>\""


def _turn(report):
    report.check("synapse_turn_user_lifetime", checks.synapse_duration)
    if not report.usable("synapse_turn_uris", "synapse_turn_secret_name", "matrix_stack_coturn_enabled"):
        return
    report.check_items("synapse_turn_uris", _turn_uri)
    if report["synapse_turn_uris"] and not report["matrix_stack_coturn_enabled"]:
        report.check_set("synapse_turn_secret_name", "synapse_turn_uris lists an external TURN server",
                         "the name of an existing Secret holding the TURN shared secret")
    if report["synapse_turn_secret_name"]:
        report.check("synapse_turn_secret_name", checks.dns_subdomain)
        report.check("synapse_turn_secret_key", checks.secret_key)


def _turn_uri(value):
    if isinstance(value, str) and re.match(r"^turns?:[^\s:?/]+(:[0-9]{1,5})?(\?transport=(udp|tcp))?$", value):
        return None
    return "is not a TURN URI", "turn:<host>[:port][?transport=udp|tcp] or turns:<host>[:port][?transport=tcp]"


def _trusted_key_servers(report):
    if not report.usable("synapse_trusted_key_servers"):
        return
    for index, server in enumerate(report["synapse_trusted_key_servers"]):
        path = f"synapse_trusted_key_servers[{index}]"
        report.check(path, checks.server_name, value=server.get("server_name"), label=f"{path}.server_name")
        unknown = sorted(set(server) - {"server_name", "verify_keys", "accept_keys_insecurely"})
        report.require(not unknown, path, f"has unknown keys {unknown}", "server_name, verify_keys, accept_keys_insecurely")


def _extra_config(report):
    if not report.usable("synapse_extra_config"):
        return
    extra = report["synapse_extra_config"]
    bad = [key for key in FORBIDDEN_EXTRA_KEYS if key in extra]
    email = extra.get("email")
    if isinstance(email, dict) and "smtp_pass" in email:
        bad.append("email.smtp_pass")
    report.require(not bad, "synapse_extra_config", f"sets {', '.join(bad)}: secrets would end up in a ConfigMap and these "
                   "blocks are managed by dedicated variables",
                   "any other homeserver.yaml key; use the synapse_* variables and Secrets for " + ", ".join(FORBIDDEN_EXTRA_KEYS))
    managed = [key for key in MANAGED_EXTRA_KEYS if key in extra]
    report.require(not managed, "synapse_extra_config", f"sets {', '.join(managed)}, managed elsewhere",
                   "; ".join(f"{key} through {MANAGED_EXTRA_KEYS[key]}" for key in managed))


def nginx_size_bytes(value):
    match = _NGINX_SIZE.match(str(value))
    if not match:
        return None
    return int(match.group(1)) * {"": 1, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30}[match.group(2).lower()]


def _ingress(report):
    report.check("synapse_ingress_class_name", checks.optional(checks.dns_subdomain))
    report.check("synapse_ingress_tls_secret_name", checks.dns_subdomain)
    report.check("synapse_wellknown_tls_secret_name", checks.dns_subdomain)
    if not report.usable("synapse_ingress_annotations"):
        return
    annotations = report["synapse_ingress_annotations"]
    kube.annotations(report, "synapse_ingress_annotations", annotations)
    if NGINX_BODY_SIZE in annotations and report.usable("synapse_max_upload_size"):
        configured = nginx_size_bytes(annotations[NGINX_BODY_SIZE])
        upload = checks.synapse_size_bytes(report["synapse_max_upload_size"])
        where = f"synapse_ingress_annotations.{NGINX_BODY_SIZE}"
        if configured is None:
            report.error(where, f"is not an nginx size ({annotations[NGINX_BODY_SIZE]})", "a size such as 100m, or 0 for no limit")
        elif configured and upload and configured < upload:
            report.error(where, f"is smaller than synapse_max_upload_size ({report['synapse_max_upload_size']}): larger uploads "
                         "would fail with 413", "at least synapse_max_upload_size, or remove it: the body size follows "
                         "synapse_max_upload_size")
