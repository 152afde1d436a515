# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Synapse Admin API and client-server endpoints matrix_user and matrix_user_info use."""

import urllib.parse

from ansible_collections.matrix.stack.plugins.module_utils.synapse.ids import registration_mac
from ansible_collections.matrix.stack.plugins.module_utils.synapse.transport import SynapseAdminError, Transport

ADMIN_V1_USERS = "/_synapse/admin/v1/users"
ADMIN_V2_USERS = "/_synapse/admin/v2/users"
ADMIN_V3_USERS = "/_synapse/admin/v3/users"
REGISTER_PATH = "/_synapse/admin/v1/register"
DEACTIVATE_PATH = "/_synapse/admin/v1/deactivate/"
LOGIN_PATH = "/_matrix/client/v3/login"
WHOAMI_PATH = "/_matrix/client/v3/account/whoami"
SERVER_KEYS_PATH = "/_matrix/key/v2/server"


class SynapseAdminClient(Transport):
    """The endpoints, over one ``Transport``."""

    @staticmethod
    def quote(user_id):
        return urllib.parse.quote(user_id, safe="")

    def whoami(self):
        return self.request("GET", WHOAMI_PATH)[1]

    def server_name_from_keys(self):
        """The server name from the unauthenticated key endpoint (None if not served)."""
        try:
            return self.request("GET", SERVER_KEYS_PATH, auth=False)[1].get("server_name")
        except SynapseAdminError:
            return None

    def get_user(self, user_id):
        status, body = self.request("GET", "%s/%s" % (ADMIN_V2_USERS, self.quote(user_id)), ok=(200, 404))
        if status == 404:
            if body.get("errcode") == "M_UNRECOGNIZED":
                raise self._error("GET", ADMIN_V2_USERS + "/<user>", status, body, b"")
            return None
        return body

    def put_user(self, user_id, body):
        return self.request("PUT", "%s/%s" % (ADMIN_V2_USERS, self.quote(user_id)), body=body, ok=(200, 201))

    def deactivate(self, user_id, erase):
        return self.request("POST", DEACTIVATE_PATH + self.quote(user_id), body={"erase": bool(erase)})[1]

    def list_users(self, page_size=100, version="v2", **filters):
        """Yield every user of the paginated list (following ``next_token`` until the end)."""
        path = ADMIN_V3_USERS if version == "v3" else ADMIN_V2_USERS
        token = "0"
        pages = 0
        while token is not None:
            query = {"from": token, "limit": page_size}
            for key, value in filters.items():
                if value is not None:
                    query[key] = ("true" if value else "false") if isinstance(value, bool) else value
            body = self.request("GET", path, query=query)[1]
            pages += 1
            yield from body.get("users", [])
            nxt = body.get("next_token")
            token = str(nxt) if nxt is not None and body.get("users") else None
            if pages > 1000000:  # pragma: no cover - bound the loop
                break

    def list_total(self, **filters):
        query = {"from": "0", "limit": 1}
        query.update({k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in filters.items()})
        return int(self.request("GET", ADMIN_V2_USERS, query=query)[1].get("total", 0))

    def joined_rooms(self, user_id):
        return self.request("GET", "%s/%s/joined_rooms" % (ADMIN_V1_USERS, self.quote(user_id)))[1]

    def devices(self, user_id):
        return self.request("GET", "%s/%s/devices" % (ADMIN_V2_USERS, self.quote(user_id)))[1]

    def register_shared_secret(self, shared_secret, localpart, password, admin, user_type=None, displayname=None):
        """Shared-secret registration (nonce + HMAC). Returns the response (user_id, access_token)
        or None when the user ID is already taken."""
        nonce = self.request("GET", REGISTER_PATH, auth=False)[1].get("nonce")
        if not nonce:
            raise SynapseAdminError("The homeserver did not return a registration nonce")
        body = {"nonce": nonce, "username": localpart, "password": password, "admin": bool(admin),
                "mac": registration_mac(shared_secret, nonce, localpart, password, admin, user_type)}
        if user_type:
            body["user_type"] = user_type
        if displayname is not None:
            body["displayname"] = displayname
        status, resp = self.request("POST", REGISTER_PATH, body=body, auth=False, ok=(200, 400))
        if status == 400:
            if resp.get("errcode") == "M_USER_IN_USE":
                return None
            raise self._register_error(resp)
        return resp

    def _register_error(self, resp):
        err = resp.get("error", "")
        if "not enabled" in err.lower():
            return SynapseAdminError(
                "Shared-secret registration failed: %s. The homeserver has no registration_shared_secret "
                "configured, or delegates authentication to Matrix Authentication Service (MAS), which "
                "disables it." % err, status=400, errcode=resp.get("errcode"))
        return SynapseAdminError("Shared-secret registration failed: HTTP 400 %s: %s"
                                 % (resp.get("errcode", ""), err), status=400, errcode=resp.get("errcode"))

    def login_password(self, user, password, device_display_name="matrix.stack"):
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
                "password": password, "initial_device_display_name": device_display_name}
        status, resp = self.request("POST", LOGIN_PATH, body=body, auth=False, ok=(200, 403))
        if status == 403:
            raise SynapseAdminError(
                "Logging in as %s failed (%s: %s): the user exists but the password is wrong or the account is "
                "deactivated. Supply a valid admin_token instead." % (user, resp.get("errcode"), resp.get("error")),
                status=403, errcode=resp.get("errcode"))
        return resp
