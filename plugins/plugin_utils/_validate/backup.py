# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rules of the backup role (scheduled in-cluster backup)."""

import re

from ansible_collections.matrix.stack.plugins.plugin_utils._validate import checks, kube

RETENTION_KEYS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")
_CRON_FIELD = re.compile(r"^(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*$")
_AGE_RECIPIENT = re.compile(r"^(age1[02-9ac-hj-np-z]{58}|ssh-(ed25519|rsa) [A-Za-z0-9+/=]+( .*)?)$")


def rules(report):
    report.check_set("backup_image", "backup_schedule_enabled is true",
                     "the backup image built from roles/backup/files/Containerfile, such as registry.example.com/matrix-backup:0.1.0", _image)
    report.check("backup_schedule", _schedule)
    report.check("backup_schedule_time_zone", _time_zone)
    report.check("backup_pvc_size", checks.quantity)
    report.check("backup_storage_class", checks.optional(checks.dns_subdomain))
    report.check("backup_existing_claim", checks.optional(checks.dns_subdomain))
    if report.check_items("backup_age_recipients", _recipient, show=False) and report.usable("backup_allow_unencrypted_secrets"):
        report.require(report["backup_age_recipients"] or report["backup_allow_unencrypted_secrets"], "backup_age_recipients",
                       "is empty: the Secrets (signing key) would be stored unencrypted",
                       "at least one age recipient (age1...), or backup_allow_unencrypted_secrets: true")
    _retention(report)
    kube.resources(report, "backup_resources")
    report.check("backup_active_deadline_seconds", checks.integer, 60)
    report.check("backup_run_as_user", checks.uid)
    report.require(report.get("postgres_mode") != "external", "backup_schedule_enabled",
                   "is true with postgres_mode external: the in-cluster backup dumps the internal PostgreSQL",
                   "false with an external database (run playbooks/backup.yml from a host that reaches it)")


def _image(value):
    name, digest = (value.split("@", 1) + [""])[:2]
    repository, tag = name.rsplit(":", 1) if ":" in name.rsplit("/", 1)[-1] else (name, "")
    if checks.image_repository(repository) is None and (not tag or checks.image_tag(tag) is None) and (
            not digest or checks.digest(digest) is None):
        return None
    return "is not an image reference", "repository[:tag][@sha256:...], such as registry.example.com/matrix-backup:0.1.0"


def _schedule(value):
    fields = value.split() if isinstance(value, str) else []
    if (len(fields) == 5 and all(_CRON_FIELD.match(field) for field in fields)) or (
            len(fields) == 1 and fields[0] in ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")):
        return None
    return "is not a cron schedule", "five cron fields (minute hour day month weekday), such as '17 3 * * *', or @daily"


def _time_zone(value):
    if isinstance(value, str) and re.match(r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$", value):
        return None
    return "is not a time zone name", "an IANA time zone such as Etc/UTC or Europe/Berlin"


def _recipient(value):
    if isinstance(value, str) and _AGE_RECIPIENT.match(value):
        return None
    return "is not an age recipient", "an age public key (age1 followed by 58 characters) or an SSH public key"


def _retention(report):
    if not report.usable("backup_retention"):
        return
    retention = report["backup_retention"]
    for key, value in retention.items():
        if key not in RETENTION_KEYS:
            report.error(f"backup_retention.{key}", "is not a retention rule", ", ".join(RETENTION_KEYS))
        else:
            report.check("backup_retention", checks.integer, 0, value=value, label=f"backup_retention.{key}")
    report.require(any(checks.is_int(value) and value > 0 for value in retention.values()), "backup_retention",
                   "keeps nothing", "at least one of " + ", ".join(RETENTION_KEYS) + " above 0")
