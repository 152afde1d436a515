# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ensure the desired state of many users over one client connection (matrix_user)."""

from ansible_collections.matrix.stack.plugins.module_utils.synapse.endpoints import ADMIN_V2_USERS
from ansible_collections.matrix.stack.plugins.module_utils.synapse.ids import UserIdError, make_user_id
from ansible_collections.matrix.stack.plugins.module_utils.synapse.planning import UserSpecError, normalise_emails, plan_user, public_user

LIST_THRESHOLD = 5
LIST_PAGE_SIZE = 1000
LIST_MAX_RATIO = 20


class UserManager(object):
    """Ensure the desired state of many users over one client connection."""

    def __init__(self, client, server_name, check_mode=False, diff=False, user_objects="always"):
        self.client = client
        self.user_objects = user_objects  # "always" or "changed": which results carry the user object
        self.server_name = server_name
        self.check_mode = check_mode
        self.diff = diff
        self._listed = None  # name -> list entry, when the list API was used

    def resolve(self, specs):
        """Validate every spec and attach ``user_id``; raises before any request is sent."""
        seen = {}
        for index, spec in enumerate(specs):
            try:
                user_id = make_user_id(spec["user"], self.server_name)
            except UserIdError as exc:
                raise UserSpecError("users[%d]: %s" % (index, exc))
            if user_id in seen:
                raise UserSpecError("users[%d]: %s is listed twice (also users[%d])" % (index, user_id, seen[user_id]))
            seen[user_id] = index
            if spec.get("emails") is not None:
                try:
                    normalise_emails(spec["emails"])
                except UserSpecError as exc:
                    raise UserSpecError("users[%d] (%s): %s" % (index, user_id, exc))
            spec["user_id"] = user_id
        return specs

    def prefetch(self, specs):
        """For bulk runs, list all users once (paginated) when that is cheaper than one GET each."""
        if len(specs) < LIST_THRESHOLD:
            return
        listed = {}
        filters = {"deactivated": "true", "locked": "true", "guests": "true"}
        approved_variants = [None]
        first = True
        while approved_variants:
            approved = approved_variants.pop(0)
            token = "0"
            while token is not None:
                query = dict(filters, limit=LIST_PAGE_SIZE)
                query["from"] = token
                if approved is not None:
                    query["approved"] = approved
                body = self.client.request("GET", ADMIN_V2_USERS, query=query)[1]
                if first:
                    first = False
                    if int(body.get("total", 0)) > max(LIST_PAGE_SIZE, LIST_MAX_RATIO * len(specs)):
                        return  # a large server: individual GETs are cheaper
                    if any("approved" in u for u in body.get("users", [])):
                        # MSC3866 on: the list hides unapproved users unless asked for them
                        approved_variants.append("false")
                for entry in body.get("users", []):
                    listed[entry["name"]] = entry
                nxt = body.get("next_token")
                token = str(nxt) if nxt is not None and body.get("users") else None
        self._listed = listed

    def current(self, spec):
        user_id = spec["user_id"]
        if self._listed is not None:
            entry = self._listed.get(user_id)
            if entry is None:
                return None
            if spec.get("state", "present") == "present" and spec.get("emails") is not None:
                return self.client.get_user(user_id)  # the list API has no threepids
            return entry
        return self.client.get_user(user_id)

    def ensure(self, spec):
        """Returns a result dict for one user. Raises SynapseAdminError / UserSpecError."""
        user_id = spec["user_id"]
        current = self.current(spec)
        ops, before, after = plan_user(spec, current)
        result = {"user_id": user_id, "state": spec.get("state") or "present", "changed": bool(ops),
                  "created": current is None and bool(ops) and ops[0][0] == "put"}
        final = current
        if ops and not self.check_mode:
            for kind, body in ops:
                if kind == "put":
                    final = self.client.put_user(user_id, body)[1]
                else:
                    self.client.deactivate(user_id, erase=body["erase"])
                    final = None
            if final is None or spec.get("state") in ("absent", "deactivated"):
                final = self.client.get_user(user_id)
        if final is not None and not (self.check_mode and ops) and (ops or self.user_objects == "always"):
            result["user"] = public_user(final)
        if self.diff:
            result["diff"] = {"before": before, "after": after}
        return result
