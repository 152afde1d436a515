#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: matrix_user_info
short_description: Read Synapse users
version_added: 0.1.0
description:
  - Returns one user of a Synapse homeserver (with the number of joined rooms and devices), or the list
    of local users with filters, following the Admin API's pagination (C(next_token)) to the end.
author:
  - matrix.stack contributors (!UNKNOWN)
extends_documentation_fragment:
  - matrix.stack.synapse_admin
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Read-only.
  action_group:
    support: full
    description: Member of C(matrix.stack.matrix) for C(module_defaults); see the notes about C(validate_certs) and C(password).
    membership:
      - matrix.stack.matrix
options:
  user:
    description:
      - Localpart or full user ID of one user to return. Without it, users are listed.
    type: str
  admins:
    description: List only admins (V(true)) or only non-admins (V(false)). Both when omitted.
    type: bool
  deactivated:
    description: List only deactivated users (V(true)) or only active ones (V(false)). Both when omitted.
    type: bool
  guests:
    description: Whether guest users are listed.
    type: bool
    default: true
  locked:
    description: Whether locked users are listed.
    type: bool
    default: true
  name:
    description: List only users whose user ID or display name contains this string.
    type: str
  page_size:
    description: Users requested per page of the list API.
    type: int
    default: 100
seealso:
  - module: matrix.stack.matrix_user
"""

EXAMPLES = r"""
- name: One user, with joined rooms and device count
  matrix.stack.matrix_user_info:
    homeserver_url: http://127.0.0.1:8008
    admin_token: "{{ matrix_admin_token }}"
    user: alice
  register: alice

- name: All active admins
  matrix.stack.matrix_user_info:
    kube_namespace: matrix
    kube_service: synapse-main
    admin_token: "{{ matrix_admin_token }}"
    admins: true
    deactivated: false
  register: admins
"""

RETURN = r"""
exists:
  description: Whether O(user) exists.
  returned: when O(user) is given
  type: bool
user:
  description:
    - The user as Synapse reports it, plus C(emails), C(joined_rooms), C(joined_rooms_count) and C(devices_count).
  returned: when O(user) is given and exists
  type: dict
  sample: {"name": "@alice:example.org", "admin": false, "deactivated": false, "displayname": "Alice",
           "emails": ["alice@example.org"], "joined_rooms": ["!abc:example.org"], "joined_rooms_count": 1,
           "devices_count": 2}
users:
  description: The users matching the filters (list API fields; no e-mail addresses).
  returned: when O(user) is not given
  type: list
  elements: dict
  sample: [{"name": "@alice:example.org", "admin": false, "deactivated": false, "displayname": "Alice",
            "user_type": null, "is_guest": false, "locked": false, "erased": false}]
total:
  description: Number of users returned.
  returned: when O(user) is not given
  type: int
pages:
  description: Number of list requests made.
  returned: when O(user) is not given
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.matrix.stack.plugins.module_utils.synapse.connection import (
    CONNECTION_MUTUALLY_EXCLUSIVE,
    CONNECTION_REQUIRED_BY,
    CONNECTION_REQUIRED_ONE_OF,
    Connection,
    connection_argument_spec,
    discover_server_name,
)
from ansible_collections.matrix.stack.plugins.module_utils.synapse.endpoints import ADMIN_V3_USERS
from ansible_collections.matrix.stack.plugins.module_utils.synapse.ids import UserIdError, make_user_id
from ansible_collections.matrix.stack.plugins.module_utils.synapse.planning import public_user
from ansible_collections.matrix.stack.plugins.module_utils.synapse.transport import SynapseAdminError


def list_users(client, params):
    query = {"guests": params["guests"], "locked": params["locked"], "admins": params["admins"],
             "deactivated": params["deactivated"], "name": params["name"]}
    query = {k: (("true" if v else "false") if isinstance(v, bool) else v) for k, v in query.items() if v is not None}
    users = []
    pages = 0
    token = "0"
    while token is not None:
        page = dict(query, limit=params["page_size"])
        page["from"] = token
        body = client.request("GET", ADMIN_V3_USERS, query=page)[1]
        pages += 1
        batch = body.get("users", [])
        users.extend(batch)
        nxt = body.get("next_token")
        token = str(nxt) if nxt is not None and batch else None
    return users, pages


def main():
    spec = connection_argument_spec()
    spec.update(
        user=dict(type="str"),
        admins=dict(type="bool"),
        deactivated=dict(type="bool"),
        guests=dict(type="bool", default=True),
        locked=dict(type="bool", default=True),
        name=dict(type="str"),
        page_size=dict(type="int", default=100),
    )
    module = AnsibleModule(
        argument_spec=spec,
        supports_check_mode=True,
        mutually_exclusive=CONNECTION_MUTUALLY_EXCLUSIVE,
        required_one_of=CONNECTION_REQUIRED_ONE_OF,
        required_by=CONNECTION_REQUIRED_BY,
        required_together=[],
    )
    params = module.params
    if not params["admin_token"]:
        module.fail_json(msg="admin_token is required (registration_shared_secret is only used by matrix_user to bootstrap an admin)")
    if params["page_size"] < 1:
        module.fail_json(msg="page_size must be at least 1")
    result = {"changed": False}
    conn = Connection(params)
    try:
        with conn as client:
            if params["user"] is not None:
                server_name = discover_server_name(client, params["server_name"])
                user_id = make_user_id(params["user"], server_name)
                user = client.get_user(user_id)
                result["exists"] = user is not None
                if user is not None:
                    out = public_user(user)
                    rooms = client.joined_rooms(user_id)
                    out["joined_rooms"] = rooms.get("joined_rooms", [])
                    out["joined_rooms_count"] = rooms.get("total", len(out["joined_rooms"]))
                    out["devices_count"] = client.devices(user_id).get("total", 0)
                    result["user"] = out
            else:
                users, pages = list_users(client, params)
                result.update(users=users, total=len(users), pages=pages)
    except UserIdError as exc:
        module.fail_json(msg=str(exc))
    except SynapseAdminError as exc:
        module.fail_json(msg=conn.explain(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
