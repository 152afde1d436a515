"""The one validation pass (plugins/plugin_utils/_validate) on many bad settings, each named with what is allowed.

Every case starts from an inventory (minimal unless said otherwise) with role defaults, templated by
ansible-core's Templar in process, exactly as the matrix.stack.validate action plugin does, and adds bad
settings on top. A case passes when a problem names the variable (or the element path) and says what is
wrong. The positive twins prove the same harness accepts the defaults, every inventory, and the edges
of each range, so a failure above is about the input and not about the harness.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

# pylint: disable=wrong-import-position
from helpers import stack_vars  # noqa: E402
from helpers.stack_vars import controller_mode  # noqa: E402,F401  pylint: disable=unused-import

from ansible_collections.matrix.stack.plugins.plugin_utils._validate import checks  # noqa: E402

EXTERNAL_DB = {"postgres_mode": "external", "postgres_external_password_secret_name": "db"}
BACKUP = {"backup_schedule_enabled": True, "backup_image": "registry.test/backup:1", "backup_allow_unencrypted_secrets": True,
          "networkpolicy_kube_api_peers": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]}
OIDC = {"idp_id": "kc", "issuer": "https://sso.example.com/", "client_id": "synapse", "client_secret_secret_name": "kc"}
PUBLIC_SSO = {"networkpolicy_public_hosts": ["sso.example.com"]}
EMAIL = {"synapse_email_enabled": True, "synapse_email_smtp_host": "smtp.example.com", "networkpolicy_public_hosts": ["smtp.example.com"]}

# (id, settings, name the message must start with, text it must contain). The first 31 are the cases of the
# former tests/integration/test_role_inputs.py (one playbook run each); the rest were tried as a new user would.
CASES = [
    ("server-name-chars", {"synapse_server_name": "Bad_Name!"}, "synapse_server_name", "DNS name"),
    ("server-name-path", {"synapse_server_name": "example.com/matrix"}, "synapse_server_name", "no path"),
    ("log-level-choice", {"synapse_log_level": "LOUD"}, "synapse_log_level", "one of"),
    ("metrics-port-type", {"synapse_metrics_port": "nine-thousand"}, "synapse_metrics_port", "an integer"),
    ("metrics-port-clash", {"synapse_metrics_port": 8008}, "synapse_metrics_port", "8008"),
    ("postgres-mode-choice", {"postgres_mode": "cloud"}, "postgres_mode", "one of"),
    ("postgres-major", {"postgres_image_tag": "15.4"}, "postgres_image_tag", "16 or 17"),
    ("postgres-external-host", EXTERNAL_DB, "postgres_external_host", "is empty"),
    ("postgres-sslmode-choice", {"postgres_external_sslmode": "maybe"}, "postgres_external_sslmode", "one of"),
    ("postgres-memory", {"postgres_resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "100Mi"}}},
     "postgres_resources.limits.memory", "256Mi"),
    ("baseurl-scheme", {"synapse_public_baseurl": "matrix.example.com"}, "synapse_public_baseurl", "https://"),
    ("relay-range", {"coturn_relay_min_port": 50000, "coturn_relay_max_port": 49000}, "coturn_relay_min_port", "range"),
    ("nodeport-relay-range", {"coturn_service_type": "NodePort"}, "coturn_relay_min_port", "30000-32767"),
    ("coturn-service-type", {"coturn_service_type": "ClusterIP"}, "coturn_service_type", "one of"),
    ("coturn-external-ip", {"coturn_external_ip": "not-an-ip"}, "coturn_external_ip", "IP address"),
    ("registration-unverified", {"synapse_registration_enabled": True}, "synapse_registration_allow_unverified", "verification"),
    ("registration-email", {"synapse_registration_enabled": True, "synapse_registration_require_email": True},
     "synapse_email_enabled", "synapse_registration_require_email"),
    ("sso-only-without-idp", {"synapse_password_login_enabled": False}, "synapse_oidc_providers", "nobody could log in"),
    ("oidc-inline-secret", {"synapse_oidc_providers": [{**OIDC, "client_secret": "hunter2"}], **PUBLIC_SSO},
     "synapse_oidc_providers[0].client_secret", "client_secret_secret_name"),
    ("oidc-type", {"synapse_oidc_providers": "keycloak"}, "synapse_oidc_providers", "not a list"),
    ("extra-config-secret", {"synapse_extra_config": {"macaroon_secret_key": "x"}}, "synapse_extra_config", "macaroon_secret_key"),
    ("upload-size", {"synapse_max_upload_size": "lots"}, "synapse_max_upload_size", "K, M, G or T"),
    ("element-theme", {"element_default_theme": "purple"}, "element_default_theme", "light, dark"),
    ("element-url", {"element_public_url": "ftp://element.example.com/"}, "element_public_url", "'ftp'"),
    ("namespace", {"matrix_stack_namespace": "Bad_NS"}, "matrix_stack_namespace", "DNS-1123"),
    ("system-namespace", {"matrix_stack_namespace": "kube-system"}, "matrix_stack_namespace", "Pod Security restricted"),
    ("servicemonitor-choice", {"matrix_stack_servicemonitor": "sometimes"}, "matrix_stack_servicemonitor", "one of"),
    ("ingress-selector-empty", {"matrix_stack_ingress_namespace_selector": {}}, "networkpolicy_ingress_namespace_selector",
     "every namespace"),
    ("backup-without-api-egress", {**BACKUP, "networkpolicy_kube_api_peers": []}, "networkpolicy_kube_api_peers",
     "kubectl get endpoints"),
    ("backup-without-image", {**BACKUP, "backup_image": ""}, "backup_image", "Containerfile"),
    ("wait-timeout-type", {"matrix_stack_wait_timeout": "forever"}, "matrix_stack_wait_timeout", "an integer"),
    # Ports and ranges.
    ("turn-port-range", {"coturn_listening_port": 70000}, "coturn_listening_port", "1 to 65535"),
    ("external-port-zero", {**EXTERNAL_DB, "postgres_external_host": "203.0.113.5", "postgres_external_port": 0},
     "postgres_external_port", "1 to 65535"),
    ("smtp-port-negative", {**EMAIL, "synapse_email_smtp_port": -1}, "synapse_email_smtp_port", "1 to 65535"),
    ("metrics-port-in-relay-range", {"coturn_metrics_enabled": True, "coturn_metrics_port": 49200}, "coturn_metrics_port",
     "relay range"),
    ("tls-port-equals-turn-port", {"coturn_tls_secret_name": "turn-tls", "coturn_tls_port": 3478}, "coturn_tls_port",
     "also coturn_listening_port"),
    ("node-port-in-relay-range", {"coturn_service_type": "NodePort", "coturn_relay_min_port": 30400, "coturn_relay_max_port": 30500},
     "coturn_node_port", "relay range"),
    ("node-port-range", {"coturn_service_type": "NodePort", "coturn_relay_min_port": 31000, "coturn_relay_max_port": 31010,
                         "coturn_node_port": 8080}, "coturn_node_port", "30000 to 32767"),
    ("oidc-ports-element", {"networkpolicy_oidc_ports": [443, 70000]}, "networkpolicy_oidc_ports[1]", "1 to 65535"),
    ("oidc-ports-empty", {"networkpolicy_oidc_ports": []}, "networkpolicy_oidc_ports", "at least one port"),
    # Counts and replicas.
    ("replicas-zero", {"element_replicas": 0}, "element_replicas", "from 1 to 100"),
    ("replicas-type", {"element_replicas": "two"}, "element_replicas", "an integer"),
    ("max-connections", {"postgres_max_connections": 5}, "postgres_max_connections", "from 20"),
    ("user-quota-negative", {"coturn_user_quota": -1}, "coturn_user_quota", "from 0"),
    ("user-quota-above-total", {"coturn_user_quota": 50, "coturn_total_quota": 10}, "coturn_user_quota", "total quota"),
    ("max-bps-negative", {"coturn_max_bps": -5}, "coturn_max_bps", "from 0"),
    ("deadline-short", {**BACKUP, "backup_active_deadline_seconds": 10}, "backup_active_deadline_seconds", "from 60"),
    ("wait-timeout-zero", {"matrix_stack_wait_timeout": 0}, "matrix_stack_wait_timeout", "from 1"),
    # Sizes and quantities.
    ("upload-size-unit", {"synapse_max_upload_size": "100MB"}, "synapse_max_upload_size", "50M"),
    ("upload-size-fraction", {"synapse_max_upload_size": "1.5M"}, "synapse_max_upload_size", "K, M, G or T"),
    ("image-pixels", {"synapse_max_image_pixels": "32 M"}, "synapse_max_image_pixels", "K, M, G or T"),
    ("pvc-size", {"postgres_storage_size": "10 GB"}, "postgres_storage_size", "10Gi"),
    ("media-size", {"synapse_media_storage_size": "lots"}, "synapse_media_storage_size", "quantity"),
    ("backup-pvc-size", {**BACKUP, "backup_pvc_size": "100G B"}, "backup_pvc_size", "quantity"),
    ("postgres-memory-exponent", {"postgres_resources": {"limits": {"memory": "1e9"}}}, "postgres_resources.limits.memory",
     "1Gi"),
    ("memory-limit-format", {"synapse_resources": {"limits": {"memory": "2 GB"}}}, "synapse_resources.limits.memory", "quantity"),
    ("memory-limit-missing", {"element_resources": {"requests": {"memory": "32Mi"}}}, "element_resources.limits.memory",
     "memory limit"),
    ("request-above-limit", {"element_resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "128Mi"}}},
     "element_resources.requests.memory", "limit"),
    ("resource-name", {"coturn_resources": {"limits": {"memory": "1Gi", "ram": "1Gi"}}}, "coturn_resources.limits.ram",
     "resource name"),
    # Durations.
    ("turn-lifetime", {"synapse_turn_user_lifetime": "1 hour"}, "synapse_turn_user_lifetime", "1h"),
    ("turn-lifetime-ms", {"synapse_turn_user_lifetime": "100ms"}, "synapse_turn_user_lifetime", "s, m, h, d, w or y"),
    ("remote-retention", {"synapse_media_retention_remote_lifetime": "3 months"}, "synapse_media_retention_remote_lifetime",
     "90d"),
    ("credential-lifetime", {"coturn_credential_lifetime": "1hr"}, "coturn_credential_lifetime", "1h"),
    # CIDRs and addresses.
    ("preview-blacklist-cidr", {"synapse_url_preview_ip_range_blacklist": ["10.0.0.0/33"]},
     "synapse_url_preview_ip_range_blacklist[0]", "10.0.0.0/8"),
    ("ipv4-except-family", {"networkpolicy_internet_ipv4_except": ["10.0.0.0/8", "fc00::/7"]}, "networkpolicy_internet_ipv4_except[1]",
     "IPv4"),
    ("lb-source-ranges", {"coturn_load_balancer_source_ranges": ["everyone"]}, "coturn_load_balancer_source_ranges[0]", "CIDR"),
    ("lb-ip", {"coturn_load_balancer_ip": "203.0.113"}, "coturn_load_balancer_ip", "IP address"),
    ("denied-peer-cidr", {"coturn_denied_peer_ips": ["10.0.0.0/8"]}, "coturn_denied_peer_ips[0]", "first-last"),
    ("denied-peer-order", {"coturn_denied_peer_ips": ["10.0.0.9-10.0.0.1"]}, "coturn_denied_peer_ips[0]", "range"),
    ("peer-except-outside", {"networkpolicy_smtp_peers": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]},
     "networkpolicy_smtp_peers[0].ipBlock.except[0]", "inside 10.0.0.0/8"),
    ("peer-cidr", {"networkpolicy_smtp_peers": [{"ipBlock": {"cidr": "10.0.0.300/32"}}]}, "networkpolicy_smtp_peers[0].ipBlock.cidr",
     "CIDR"),
    # Host names and URLs.
    ("turn-host", {"coturn_public_host": "turn server"}, "coturn_public_host", "DNS name"),
    ("db-host", {**EXTERNAL_DB, "postgres_external_host": "db host"}, "postgres_external_host", "DNS name"),
    ("smtp-host-url", {**EMAIL, "synapse_email_smtp_host": "smtp://mail.example.com"}, "synapse_email_smtp_host", "host name"),
    ("smtp-host-empty", {**EMAIL, "synapse_email_smtp_host": ""}, "synapse_email_smtp_host", "is empty"),
    ("element-url-path", {"element_public_url": "https://chat.example.com/app/"}, "element_public_url", "without a path"),
    ("baseurl-slash", {"synapse_public_baseurl": "https://matrix.example.com"}, "synapse_public_baseurl", "ending with '/'"),
    ("oidc-issuer-http", {"synapse_oidc_providers": [{**OIDC, "issuer": "http://sso.example.com/"}], **PUBLIC_SSO},
     "synapse_oidc_providers[0].issuer", "https://"),
    ("oidc-endpoint", {"synapse_oidc_providers": [{**OIDC, "token_endpoint": "sso.example.com/token"}], **PUBLIC_SSO},
     "synapse_oidc_providers[0].token_endpoint", "https://"),
    ("logo-url", {"element_logo_url": "javascript:alert(1)"}, "element_logo_url", "URL or path"),
    ("footer-link", {"element_auth_footer_links": [{"text": "Terms", "url": "terms"}]}, "element_auth_footer_links[0].url", "URL"),
    ("room-directory", {"element_room_directory_servers": ["https://matrix.org"]}, "element_room_directory_servers[0]", "no scheme"),
    ("key-server", {"synapse_trusted_key_servers": [{"server_name": "matrix.org/"}]}, "synapse_trusted_key_servers[0].server_name",
     "DNS name"),
    ("notif-from", {**EMAIL, "synapse_email_notif_from": "Matrix"}, "synapse_email_notif_from", "mail address"),
    ("kubeconfig-missing", {"matrix_stack_kubeconfig": "/nonexistent/kubeconfig"}, "matrix_stack_kubeconfig", "does not exist"),
    # Versions, tags, digests.
    ("synapse-version", {"synapse_version": "latest"}, "synapse_version", "1.163.2"),
    ("element-version-v", {"element_version": "v1.12.2"}, "element_version", "1.12.2"),
    ("postgres-tag", {"postgres_image_tag": "latest"}, "postgres_image_tag", "16 or 17"),
    ("coturn-tag", {"coturn_image_tag": "4.6.3 slim"}, "coturn_image_tag", "image tag"),
    ("digest", {"synapse_image_digest": "sha256:abc"}, "synapse_image_digest", "64"),
    ("repository", {"element_image_repository": "ghcr.io/Element-HQ/element-web:v1"}, "element_image_repository", "no tag"),
    ("backup-image", {**BACKUP, "backup_image": "registry.test/backup:bad tag"}, "backup_image", "image reference"),
    ("pss-version", {"matrix_stack_pod_security_version": "1.30"}, "matrix_stack_pod_security_version", "v1.30"),
    # Labels, names, selectors, tolerations.
    ("label-value", {"matrix_stack_extra_labels": {"team": "Platform Team"}}, "matrix_stack_extra_labels.team", "label value"),
    ("label-key", {"matrix_stack_extra_labels": {"Bad Key": "x"}}, "matrix_stack_extra_labels.Bad Key", "label key"),
    ("node-selector", {"synapse_node_selector": {"disk": "ssd!"}}, "synapse_node_selector.disk", "label value"),
    ("annotation-value", {"matrix_stack_ingress_annotations": {"example.com/flag": True}},
     "matrix_stack_ingress_annotations.example.com/flag",
     "quote numbers and booleans"),
    ("pull-secret-name", {"matrix_stack_image_pull_secrets": ["Registry_Creds"]}, "matrix_stack_image_pull_secrets[0]", "DNS-1123"),
    ("instance-length", {"matrix_stack_instance": "a" * 31}, "matrix_stack_instance", "30 characters"),
    ("storage-class", {"postgres_storage_class": "Fast SSD"}, "postgres_storage_class", "DNS-1123"),
    ("tls-secret-name", {"synapse_ingress_tls_secret_name": "TLS"}, "synapse_ingress_tls_secret_name", "DNS-1123"),
    ("ingress-class", {"element_ingress_class_name": "Nginx Public"}, "element_ingress_class_name", "DNS-1123"),
    ("toleration-operator", {"synapse_tolerations": [{"key": "dedicated", "operator": "Maybe"}]}, "synapse_tolerations[0].operator",
     "Equal, Exists"),
    ("toleration-keys", {"postgres_tolerations": [{"key": "a", "effects": "NoSchedule"}]}, "postgres_tolerations[0]", "unknown keys"),
    ("backup-pod-labels-empty", {"matrix_stack_backup_pod_labels": {}}, "matrix_stack_backup_pod_labels", "at least one label"),
    ("dns-selector-empty", {"networkpolicy_dns_pod_selector": {}}, "networkpolicy_dns_pod_selector", "at least one label"),
    ("peer-field", {"networkpolicy_oidc_peers": [{"namespace": "keycloak"}]}, "networkpolicy_oidc_peers[0].namespace",
     "ipBlock, namespaceSelector, podSelector"),
    ("peer-selector-field", {"networkpolicy_oidc_peers": [{"namespaceSelector": {"labels": {"a": "b"}}}]},
     "networkpolicy_oidc_peers[0].namespaceSelector.labels", "matchLabels"),
    ("extra-egress-field", {"networkpolicy_synapse_extra_egress": [{"to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "port": 443}]},
     "networkpolicy_synapse_extra_egress[0].port", "to, ports"),
    ("extra-ingress-protocol", {"networkpolicy_synapse_extra_ingress": [{"ports": [{"protocol": "HTTP", "port": 8008}]}]},
     "networkpolicy_synapse_extra_ingress[0].ports[0].protocol", "TCP, UDP, SCTP"),
    # Types and list elements.
    ("list-given-string", {"synapse_turn_uris": "turn:turn.example.com"}, "synapse_turn_uris", "not a list"),
    ("dict-given-list", {"synapse_extra_config": ["enable_search"]}, "synapse_extra_config", "not a mapping"),
    ("str-given-mapping", {"synapse_server_name": {"name": "example.com"}}, "synapse_server_name", "not a single value"),
    ("bool-type", {"matrix_stack_element_enabled": "perhaps"}, "matrix_stack_element_enabled", "true or false"),
    ("list-element-type", {"synapse_trusted_key_servers": ["matrix.org"]}, "synapse_trusted_key_servers", "list of dict"),
    ("str-list-element-mapping", {"element_room_directory_servers": [{"server": "matrix.org"}]}, "element_room_directory_servers",
     "element [0]"),
    ("theme-colors", {"element_custom_themes": [{"name": "x"}], "element_default_theme": "custom-x"}, "element_custom_themes[0].colors",
     "mapping"),
    ("security-header", {"element_security_headers": {"X-Test": "a\nb"}}, "element_security_headers.X-Test", "single-line"),
    ("run-as-root", {"synapse_run_as_user": 0}, "synapse_run_as_user", "non-root"),
    ("postgres-setting-name", {"postgres_extra_settings": {"shared buffers": "1GB"}}, "postgres_extra_settings.shared buffers",
     "setting name"),
    ("postgres-setting-value", {"postgres_extra_settings": {"work_mem": {"a": 1}}}, "postgres_extra_settings.work_mem",
     "single value"),
    ("postgres-identifier", {"postgres_database": "Synapse-DB"}, "postgres_database", "SQL identifier"),
    ("url-blacklist-key", {"synapse_url_preview_url_blacklist": [{"domain": "example.com"}]}, "synapse_url_preview_url_blacklist[0]",
     "netloc"),
    ("coturn-extra-secret", {"coturn_extra_config": ["static-auth-secret=x"]}, "coturn_extra_config[0]", "ConfigMap"),
    # Cross-setting rules.
    ("turn-uri-format", {"matrix_stack_coturn_enabled": False, "synapse_turn_uris": ["stun:turn.example.com"],
                         "synapse_turn_secret_name": "turn"}, "synapse_turn_uris[0]", "turn:<host>"),
    ("turn-without-secret", {"matrix_stack_coturn_enabled": False, "synapse_turn_uris": ["turn:turn.example.com"]},
     "synapse_turn_secret_name", "TURN shared secret"),
    ("sso-only-registration", {"synapse_password_login_enabled": False, "synapse_registration_enabled": True,
                               "synapse_registration_requires_token": True, "synapse_oidc_providers": [OIDC], **PUBLIC_SSO},
     "synapse_registration_enabled", "SSO"),
    ("oidc-duplicate", {"synapse_oidc_providers": [OIDC, OIDC], **PUBLIC_SSO}, "synapse_oidc_providers[1].idp_id", "repeats"),
    ("oidc-client-id", {"synapse_oidc_providers": [{**OIDC, "client_id": ""}], **PUBLIC_SSO}, "synapse_oidc_providers[0].client_id",
     "client ID"),
    ("oidc-scopes", {"synapse_oidc_providers": [{**OIDC, "scopes": ["profile"]}], **PUBLIC_SSO}, "synapse_oidc_providers[0].scopes",
     "openid"),
    ("oidc-no-secret", {"synapse_oidc_providers": [{k: v for k, v in OIDC.items() if k != "client_secret_secret_name"}],
                        **PUBLIC_SSO}, "synapse_oidc_providers[0].client_secret_secret_name", "existing Secret"),
    ("smtp-user", {**EMAIL, "synapse_email_smtp_password_secret_name": "smtp"}, "synapse_email_smtp_user", "SMTP user"),
    ("extra-config-database", {"synapse_extra_config": {"database": {"name": "sqlite3"}}}, "synapse_extra_config", "database"),
    ("extra-config-upload-size", {"synapse_extra_config": {"max_upload_size": "1G"}}, "synapse_extra_config",
     "synapse_max_upload_size"),
    ("extra-config-server-name", {"synapse_extra_config": {"server_name": "other.example"}}, "synapse_extra_config",
     "synapse_server_name"),
    ("extra-config-smtp-pass", {"synapse_extra_config": {"email": {"smtp_pass": "x"}}}, "synapse_extra_config", "email.smtp_pass"),
    ("backup-unencrypted", {**BACKUP, "backup_allow_unencrypted_secrets": False}, "backup_age_recipients", "unencrypted"),
    ("backup-recipient", {**BACKUP, "backup_age_recipients": ["not-a-key"]}, "backup_age_recipients[0]", "age1"),
    ("backup-retention-zero", {**BACKUP, "backup_retention": {"keep_daily": 0}}, "backup_retention", "above 0"),
    ("backup-retention-key", {**BACKUP, "backup_retention": {"keep_daily": 3, "keep_yearly": 1}}, "backup_retention.keep_yearly",
     "keep_last"),
    ("backup-schedule", {**BACKUP, "backup_schedule": "daily"}, "backup_schedule", "five cron fields"),
    ("backup-time-zone", {**BACKUP, "backup_schedule_time_zone": "UTC+2 hours"}, "backup_schedule_time_zone", "Europe/Berlin"),
    ("backup-external-db", {**BACKUP, **EXTERNAL_DB, "postgres_external_host": "203.0.113.5"}, "backup_schedule_enabled",
     "external"),
    ("body-size-below-upload", {"synapse_max_upload_size": "100M",
                                "synapse_ingress_annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "10m"}},
     "synapse_ingress_annotations.nginx.ingress.kubernetes.io/proxy-body-size", "413"),
    ("body-size-format", {"synapse_ingress_annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "ten"}},
     "synapse_ingress_annotations.nginx.ingress.kubernetes.io/proxy-body-size", "100m"),
    # Every external dependency gets its egress rule (issue 10 item 8).
    ("egress-db-dns-name", {**EXTERNAL_DB, "postgres_external_host": "db.example.internal"}, "networkpolicy_postgres_external_peers",
     "DNS name"),
    ("egress-db-private-ip", {**EXTERNAL_DB, "postgres_external_host": "192.168.10.5"}, "networkpolicy_postgres_external_peers",
     "private"),
    ("egress-db-ip-outside-peers", {**EXTERNAL_DB, "postgres_external_host": "10.20.0.5",
                                    "networkpolicy_postgres_external_peers": [{"ipBlock": {"cidr": "10.20.0.6/32"}}]},
     "networkpolicy_postgres_external_peers", "does not include 10.20.0.5"),
    ("egress-db-public-ip-no-internet", {**EXTERNAL_DB, "postgres_external_host": "203.0.114.5",
                                         "networkpolicy_synapse_internet_egress": False},
     "networkpolicy_postgres_external_peers", "203.0.114.5/32"),
    ("egress-db-ipv6-off", {**EXTERNAL_DB, "postgres_external_host": "2001:4860::5", "networkpolicy_ipv6": False},
     "networkpolicy_postgres_external_peers", "2001:4860::5/128"),
    ("egress-smtp-dns-name", {**EMAIL, "networkpolicy_public_hosts": []}, "networkpolicy_smtp_peers", "networkpolicy_public_hosts"),
    ("egress-smtp-public-no-internet", {**EMAIL, "networkpolicy_synapse_internet_egress": False}, "networkpolicy_smtp_peers",
     "internet_egress is false"),
    ("egress-oidc-dns-name", {"synapse_oidc_providers": [OIDC]}, "networkpolicy_oidc_peers", "synapse_oidc_providers[0].issuer"),
    ("egress-oidc-port", {"synapse_oidc_providers": [{**OIDC, "issuer": "https://sso.example.com:8443/"}],
                          "networkpolicy_oidc_peers": [{"namespaceSelector": {"matchLabels": {"name": "sso"}}}]},
     "networkpolicy_oidc_ports", "port 8443"),
    ("egress-key-servers", {"networkpolicy_synapse_internet_egress": False}, "synapse_trusted_key_servers", "internet"),
    ("egress-url-previews", {"networkpolicy_synapse_internet_egress": False, "synapse_trusted_key_servers": [],
                             "synapse_url_preview_enabled": True}, "synapse_url_preview_enabled", "networkpolicy_synapse_extra_egress"),
    ("egress-oidc-endpoint", {"synapse_oidc_providers": [{**OIDC, "discover": False, "token_endpoint": "https://10.5.0.9/token",
                                                          "userinfo_endpoint": "https://sso.example.com/userinfo"}], **PUBLIC_SSO},
     "networkpolicy_oidc_peers", "synapse_oidc_providers[0].token_endpoint (10.5.0.9)"),
]


@pytest.mark.parametrize("settings,name,text", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_setting_is_named_with_what_is_allowed(settings, name, text):
    found = stack_vars.problems(**settings)
    named = [problem for problem in found if problem.startswith(name + ":")]
    assert named, f"no problem names {name}: {found}"
    assert any(text in problem for problem in named), f"{text!r} not in {named}"
    assert all("allowed:" in problem or "is required" in problem for problem in found), found


def test_case_ids_are_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("missing", ["synapse_server_name", "coturn_public_host", "coturn_external_ip"])
def test_missing_required_value(missing):
    found = stack_vars.problems(drop=[missing])
    assert found == [f"{missing}: is required and not set; see docs/configuration.md"]


def test_coturn_values_are_required_only_with_coturn():
    assert stack_vars.problems(drop=["coturn_public_host", "coturn_external_ip"], matrix_stack_coturn_enabled=False) == []


def test_every_problem_at_once():
    """Many bad settings in one input: each is reported, none hides another."""
    chosen = ["server-name-chars", "log-level-choice", "metrics-port-type", "postgres-major", "relay-range", "element-theme",
              "wait-timeout-type", "pull-secret-name", "replicas-zero", "turn-lifetime", "label-value", "toleration-operator",
              "extra-config-secret", "ipv4-except-family", "upload-size-unit", "peer-field"]
    cases = {case[0]: case for case in CASES}
    settings = {}
    for case_id in chosen:
        settings.update(cases[case_id][1])
    found = stack_vars.problems(**settings)
    for case_id in chosen:
        name = cases[case_id][2]
        assert any(problem.startswith(name + ":") for problem in found), f"{case_id}: {name} missing from {found}"
    assert len(found) == len(chosen), found


def test_a_default_derived_from_a_bad_value_is_not_reported_again():
    found = stack_vars.problems(synapse_server_name="Bad_Name!")
    assert [problem.split(":")[0] for problem in found] == ["synapse_server_name"]
    # ... but the same bad value set explicitly is reported.
    found = stack_vars.problems(synapse_server_name="Bad_Name!", element_public_url="https://element.Bad_Name!/")
    assert {problem.split(":")[0] for problem in found} == {"synapse_server_name", "element_public_url"}


def test_a_value_that_cannot_be_templated_is_named():
    from ansible.template import trust_as_template  # pylint: disable=import-outside-toplevel  # controller code: see stack_vars
    found = stack_vars.problems(synapse_public_baseurl=trust_as_template("https://{{ no_such_variable }}/"))
    assert len(found) == 1 and found[0].startswith("synapse_public_baseurl: cannot be computed"), found
    assert "no_such_variable" in found[0]


# ----- positive twins ---------------------------------------------------------------------------

@pytest.mark.parametrize("inventory", stack_vars.TEST_INVENTORIES + ["example"])
def test_inventory_is_valid(inventory):
    assert stack_vars.problems(inventory) == []


def test_molecule_scenario_is_valid():
    path = stack_vars.REPO / "molecule" / "default" / "vars" / "stack.yml"
    scenario = stack_vars.loader().load_from_file(str(path), trusted_as_template=True)
    assert stack_vars.problems(None, **scenario) == []


def test_test_inventories_found():
    assert {"minimal", "full", "external-postgres", "sso-only"} <= set(stack_vars.TEST_INVENTORIES)


GOOD = [
    ("port-edges", {"coturn_listening_port": 1, "coturn_tls_port": 65535}),
    ("upload-size-bytes", {"synapse_max_upload_size": 1048576}),
    ("upload-size-tebibytes", {"synapse_max_upload_size": "1T"}),
    ("lifetime-milliseconds", {"synapse_turn_user_lifetime": 3600000, "coturn_credential_lifetime": "86400000"}),
    ("retention-empty", {"synapse_media_retention_local_lifetime": "", "synapse_media_retention_remote_lifetime": "1y"}),
    ("quantities", {"postgres_storage_size": "1.5Ti", "synapse_media_storage_size": "500G",
                    "synapse_resources": {"requests": {"cpu": "0.5", "memory": "512Mi"}, "limits": {"memory": "2e9", "cpu": "2"}}}),
    ("string-port-from-cli", {"synapse_metrics_port": "9100"}),
    ("server-name-port", {"synapse_server_name": "example.com:8448", "element_public_url": "https://chat.example.com/"}),
    ("ipv6-ranges", {"synapse_url_preview_ip_range_whitelist": ["2001:db8::/48", "192.0.2.10"]}),
    ("peer-range", {"coturn_allowed_peer_ips": ["203.0.113.5", "198.51.100.1-198.51.100.9"]}),
    ("nodeport", {"coturn_service_type": "NodePort", "coturn_relay_min_port": 31000, "coturn_relay_max_port": 31099}),
    ("tolerations", {"synapse_tolerations": [{"key": "dedicated", "operator": "Equal", "value": "matrix", "effect": "NoSchedule"},
                                             {"operator": "Exists", "tolerationSeconds": 30}]}),
    ("db-public-ip", {**EXTERNAL_DB, "postgres_external_host": "203.0.114.5"}),
    ("db-dns-with-peers", {**EXTERNAL_DB, "postgres_external_host": "db.example.internal",
                           "networkpolicy_postgres_external_peers": [{"ipBlock": {"cidr": "10.0.12.0/24", "except": ["10.0.12.1/32"]}}]}),
    ("db-ip-in-peers", {**EXTERNAL_DB, "postgres_external_host": "10.20.0.5",
                        "networkpolicy_postgres_external_peers": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]}),
    ("smtp-public-host", EMAIL),
    ("smtp-public-host-trailing-dot", {**EMAIL, "synapse_email_smtp_host": "smtp.example.com."}),
    ("oidc-public-host", {"synapse_oidc_providers": [OIDC], **PUBLIC_SSO}),
    ("oidc-in-cluster", {"synapse_oidc_providers": [{**OIDC, "issuer": "https://keycloak.sso.svc:8443/realms/m"}],
                         "networkpolicy_oidc_peers": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "sso"}}}],
                         "networkpolicy_oidc_ports": [8443]}),
    ("no-policies-no-egress-rule", {**EXTERNAL_DB, "postgres_external_host": "db.example.internal",
                                    "matrix_stack_networkpolicy_enabled": False}),
    ("closed-federation", {"networkpolicy_synapse_internet_egress": False, "synapse_trusted_key_servers": []}),
    ("key-servers-through-extra-egress", {"networkpolicy_synapse_internet_egress": False,
                                          "networkpolicy_synapse_extra_egress": [{"to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}]}]}),
    ("body-size-explicit-larger", {"synapse_ingress_annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "1g"}}),
    ("body-size-unlimited", {"synapse_ingress_annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "0"}}),
    ("backup", BACKUP),
    ("backup-recipient", {**BACKUP, "backup_allow_unencrypted_secrets": False,
                          "backup_age_recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]}),
    ("existing-default-namespace", {"matrix_stack_namespace": "default", "matrix_stack_create_namespace": False}),
    ("render-mode-kubeconfig", {"matrix_stack_kubeconfig": "/nonexistent/kubeconfig", "matrix_stack_render_dir": "/tmp/out"}),
    ("custom-theme", {"element_custom_themes": [{"name": "Ocean", "colors": {"accent-color": "#0dbd8b"}}],
                      "element_default_theme": "custom-Ocean"}),
    ("sso-only", {"synapse_password_login_enabled": False, "synapse_oidc_providers": [OIDC], **PUBLIC_SSO}),
    ("external-turn", {"matrix_stack_coturn_enabled": False, "synapse_turn_uris": ["turns:turn.example.com:5349?transport=tcp"],
                       "synapse_turn_secret_name": "turn"}),
]


@pytest.mark.parametrize("settings", [case[1] for case in GOOD], ids=[case[0] for case in GOOD])
def test_good_setting_is_accepted(settings):
    assert stack_vars.problems(**settings) == []


# ----- checkers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [("10Gi", 10 * 2 ** 30), ("250m", 0.25), ("1.5Ki", 1536), ("2e3", 2000.0), (3, 3.0),
                                            ("+1M", 1e6), ("bad", None)])
def test_quantity_value(value, expected):
    assert checks.quantity_value(value) == expected


@pytest.mark.parametrize("value,expected", [("50M", 50 * 2 ** 20), ("1T", 2 ** 40), (7, 7), ("7", 7), ("7MB", None)])
def test_synapse_size_bytes(value, expected):
    assert checks.synapse_size_bytes(value) == expected


def test_checkers_report_problem_and_allowed():
    for checker, value in [(checks.port, True), (checks.dns_label, "A"), (checks.cidr, "x"), (checks.hostname, "a b"),
                           (checks.url, "https://"), (checks.quantity, "1 Gi"), (checks.synapse_duration, "1.5h"),
                           (checks.digest, "sha256:"), (checks.image_tag, ""), (checks.secret_key, "a/b")]:
        problem, allowed = checker(value)
        assert problem and allowed, checker


def test_likely_typos():
    from ansible_collections.matrix.stack.plugins.plugin_utils._validate import collect  # pylint: disable=import-outside-toplevel
    known = stack_vars.NAMES
    found = collect.likely_typos({"synapse_max_uplod_size": 1, "coturn_public_hosts": "x", "synapse_server_name": "a",
                                  "matrix_users_manage": False, "synapse_my_own_thing": 1, "unrelated_max_upload_size": 1},
                                 known, playbook_text="when: matrix_users_manage | bool")
    assert found == {"synapse_max_uplod_size": "synapse_max_upload_size", "coturn_public_hosts": "coturn_public_host"}
