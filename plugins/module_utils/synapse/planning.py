# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What to send for one user: the compare and minimal PUT of matrix_user (``plan_user``, pure), and the user object
returned to Ansible."""

from ansible_collections.matrix.stack.plugins.module_utils.synapse.ids import canonicalise_email

USER_FIELDS = ("password", "update_password", "admin", "displayname", "emails", "user_type", "locked",
               "logout_devices", "state")
# Managed attributes shown in diffs and compared; never the password.
SNAPSHOT_KEYS = ("exists", "admin", "displayname", "emails", "user_type", "locked", "deactivated", "erased")


# Bulk runs list the server's users instead of one GET per user when the server holds at most
# this many users per requested user (the list API is one request per LIST_PAGE_SIZE users).
class UserSpecError(ValueError):
    pass


def normalise_emails(emails):
    out = set()
    for address in emails or ():
        try:
            out.add(canonicalise_email(address))
        except ValueError as exc:
            raise UserSpecError(str(exc))
    return sorted(out)


def current_emails(current):
    return sorted({t.get("address") for t in current.get("threepids") or () if t.get("medium") == "email"})


def snapshot(current, with_emails=True):
    """Comparable view of a Synapse user object (None: absent)."""
    if current is None:
        return {"exists": False}
    snap = {
        "exists": True,
        "admin": bool(current.get("admin")),
        "displayname": current.get("displayname"),
        "user_type": current.get("user_type"),
        "locked": bool(current.get("locked")),
        "deactivated": bool(current.get("deactivated")),
        "erased": bool(current.get("erased")),
    }
    if with_emails and "threepids" in current:
        snap["emails"] = current_emails(current)
    return snap


def _norm_displayname(value):
    return value if value else None  # Synapse stores "" as no display name


def plan_user(spec, current):
    """Work out what must change for one user.

    ``spec``: dict with the USER_FIELDS (None: not managed). ``current``: Synapse user object or
    None. Returns ``(ops, before, after)`` where ``ops`` is a list of ``(kind, body)`` with kind in
    ``put`` / ``deactivate``; ``before``/``after`` are snapshots for the diff (no passwords).
    """
    state = spec.get("state") or "present"
    before = snapshot(current)
    after = dict(before)
    ops = []
    if state == "absent":
        if current is not None and not (current.get("deactivated") and current.get("erased")):
            ops.append(("deactivate", {"erase": True}))
            # deactivation removes threepids and the password; erase also removes the profile
            after.update(deactivated=True, erased=True, displayname=None)
            if "emails" in after:
                after["emails"] = []
        return ops, before, after
    if state == "deactivated":
        if current is not None and not current.get("deactivated"):
            ops.append(("deactivate", {"erase": False}))
            after.update(deactivated=True)
            if "emails" in after:
                after["emails"] = []
        return ops, before, after

    # present
    password = spec.get("password")
    update_password = spec.get("update_password") or "on_create"
    want_emails = normalise_emails(spec["emails"]) if spec.get("emails") is not None else None
    want_type = spec.get("user_type")
    if want_type == "":
        want_type_value = None
    else:
        want_type_value = want_type

    if current is None:
        body = {}
        if password is not None:
            body["password"] = password
        if spec.get("admin") is not None:
            body["admin"] = bool(spec["admin"])
        if spec.get("displayname") is not None:
            body["displayname"] = spec["displayname"]
        if want_emails is not None:
            body["threepids"] = [{"medium": "email", "address": a} for a in want_emails]
        if want_type is not None:
            body["user_type"] = want_type_value
        ops.append(("put", body))
        # Synapse ignores 'locked' when creating: lock in a second call.
        if spec.get("locked"):
            ops.append(("put", {"locked": True}))
        after = {
            "exists": True,
            "admin": bool(spec.get("admin")),
            "displayname": _norm_displayname(spec.get("displayname")),
            "user_type": want_type_value,
            "locked": bool(spec.get("locked")),
            "deactivated": False,
            "erased": False,
            "emails": want_emails if want_emails is not None else [],
        }
        if password is not None:
            after["password_updated"] = True
        return ops, before, after

    body = {}
    if current.get("deactivated"):
        if password is None:
            raise UserSpecError(
                "%s is deactivated: reactivating it (state=present) needs a new password" % current.get("name"))
        body["deactivated"] = False
        body["password"] = password
        after.update(deactivated=False, erased=False)
    elif password is not None and update_password == "always":
        body["password"] = password
    if "password" in body:
        after["password_updated"] = True
        if spec.get("logout_devices") is not None:
            body["logout_devices"] = bool(spec["logout_devices"])
    if spec.get("admin") is not None and bool(spec["admin"]) != bool(current.get("admin")):
        body["admin"] = bool(spec["admin"])
        after["admin"] = bool(spec["admin"])
    if spec.get("displayname") is not None and \
            _norm_displayname(spec["displayname"]) != _norm_displayname(current.get("displayname")):
        body["displayname"] = spec["displayname"]
        after["displayname"] = _norm_displayname(spec["displayname"])
    if want_emails is not None:
        if "threepids" not in current:
            raise ValueError("internal error: e-mails compared without the user's threepids")
        if want_emails != current_emails(current):
            others = [{"medium": t["medium"], "address": t["address"]}
                      for t in current.get("threepids") or () if t.get("medium") != "email"]
            body["threepids"] = others + [{"medium": "email", "address": a} for a in want_emails]
            after["emails"] = want_emails
    if want_type is not None and want_type_value != current.get("user_type"):
        body["user_type"] = want_type_value
        after["user_type"] = want_type_value
    if spec.get("locked") is not None and bool(spec["locked"]) != bool(current.get("locked")):
        body["locked"] = bool(spec["locked"])
        after["locked"] = bool(spec["locked"])
    if body:
        ops.append(("put", body))
    return ops, before, after


def public_user(user):
    """The user object as returned to Ansible (Synapse returns no secrets; copy defensively)."""
    keys = ("name", "admin", "deactivated", "erased", "locked", "shadow_banned", "displayname", "avatar_url",
            "threepids", "external_ids", "user_type", "is_guest", "creation_ts", "last_seen_ts", "appservice_id",
            "suspended", "approved", "consent_version", "consent_ts", "consent_server_notice_sent")
    out = {k: user[k] for k in keys if k in user}
    if "threepids" in out:
        out["emails"] = current_emails(out)
    return out
