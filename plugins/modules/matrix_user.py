#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: matrix_user
short_description: Ensure Synapse users are present, deactivated or erased
version_added: 0.1.0
description:
  - Creates, updates, deactivates, reactivates and erases local users of a Synapse homeserver through
    the Synapse Admin API, one user (O(user)) or many in one task (O(users)) over one HTTP connection.
  - Reads each user first and sends only what differs (minimal C(PUT)); reports C(changed) only when
    something changed. Check mode sends no write request. Diff mode shows before/after, never passwords.
  - Can bootstrap the first admin with O(registration_shared_secret) when no admin token exists yet.
author:
  - matrix.stack contributors (!UNKNOWN)
extends_documentation_fragment:
  - matrix.stack.synapse_admin
attributes:
  check_mode:
    support: full
    description: No write request is sent. Without O(admin_token), check mode cannot look users up and reports a change.
  diff_mode:
    support: full
    description: Before/after of the managed attributes (no passwords).
  action_group:
    support: full
    description: Member of C(matrix.stack.matrix) for C(module_defaults); see the notes about C(validate_certs) and C(password).
    membership:
      - matrix.stack.matrix
options:
  user:
    description:
      - Localpart (V(alice)) or full user ID (V(@alice:example.org)) of the user.
      - Validated against the Matrix user ID grammar (lowercase C(a-z), C(0-9), C(._=-/+)); a full
        user ID must belong to this homeserver.
      - Mutually exclusive with O(users).
    type: str
  password:
    description:
      - Password set when the user is created, when O(update_password=always), and when a deactivated
        user is reactivated (required then).
      - Synapse cannot tell whether a password is already set to this value, so O(update_password=always)
        reports a change on every run.
    type: str
  update_password:
    description:
      - V(on_create) sets O(password) only for new (or reactivated) users; V(always) sets it on every run.
    type: str
    choices: [on_create, always]
    default: on_create
  admin:
    description: Whether the user is a server admin. Not managed when omitted (new users are not admins).
    type: bool
  displayname:
    description: Display name. Not managed when omitted; V("") removes it.
    type: str
  emails:
    description:
      - E-mail addresses (threepids) of the user; replaces the whole list of e-mail threepids (phone
        numbers are kept). Compared after Synapse's normalisation (domain lowercased, local part casefolded).
      - Not managed when omitted; V([]) removes all.
    type: list
    elements: str
  user_type:
    description:
      - Synapse user type, for example V(bot) or V(support) (or a type from Synapse's C(user_types)
        setting). V("") makes the user a regular user. Not managed when omitted.
    type: str
  locked:
    description: Whether the account is locked (cannot log in or use its sessions). Not managed when omitted.
    type: bool
  logout_devices:
    description:
      - Whether setting a password logs out all the user's devices (Synapse's default, V(true)).
    type: bool
  state:
    description:
      - V(present) creates or updates the user; a deactivated user is reactivated (needs O(password)).
      - V(deactivated) deactivates an existing user (reversible with a new password); a user that
        does not exist is left absent.
      - V(absent) deactivates the user with C(erase), the closest thing to deleting that Synapse has;
        Synapse has no hard delete, and the user ID can never be registered again.
    type: str
    choices: [present, deactivated, absent]
    default: present
  users:
    description:
      - Many users in one task and one HTTP connection, each entry with the same fields as the
        single-user options. Fields an entry omits take the value of the top-level option of the same
        name (for example a common O(state) or O(update_password)).
      - For five users or more, the module lists the server's users once (paginated) instead of one
        C(GET) per user when the server does not hold many more users than the task manages; users
        with O(users[].emails) are then read individually, as the list API has no e-mail addresses.
      - With O(registration_shared_secret) and no O(admin_token), the first entry is the admin that is bootstrapped.
    type: list
    elements: dict
    suboptions:
      user:
        description: Localpart or full user ID.
        type: str
        required: true
      password:
        description: See O(password).
        type: str
      update_password:
        description: See O(update_password).
        type: str
        choices: [on_create, always]
      admin:
        description: See O(admin).
        type: bool
      displayname:
        description: See O(displayname).
        type: str
      emails:
        description: See O(emails).
        type: list
        elements: str
      user_type:
        description: See O(user_type).
        type: str
      locked:
        description: See O(locked).
        type: bool
      logout_devices:
        description: See O(logout_devices).
        type: bool
      state:
        description: See O(state).
        type: str
        choices: [present, deactivated, absent]
  return_access_token:
    description:
      - Return the access token used by the task (the one obtained by bootstrapping, or O(admin_token)) as
        RV(access_token), to store it (for example with M(matrix.stack.matrix_secret)) and reuse it.
      - The token is a secret. The task result is then flagged C(no_log) (by the module's action plugin), so
        Ansible hides the whole result in all output at every verbosity; the registered variable keeps the token.
        Tasks that use it should set C(no_log) themselves (an option marked C(no_log), such as O(admin_token),
        is masked anyway).
    type: bool
    default: false
seealso:
  - module: matrix.stack.matrix_user_info
  - name: Synapse Admin API for users
    description: The API this module uses.
    link: https://element-hq.github.io/synapse/latest/admin_api/user_admin_api.html
"""

EXAMPLES = r"""
- name: Bootstrap the first admin from the shared secret and keep its token
  matrix.stack.matrix_user:
    homeserver_url: http://synapse-main.matrix.svc:8008
    registration_shared_secret: "{{ synapse_registration_shared_secret }}"
    user: admin
    password: "{{ matrix_admin_password }}"
    admin: true
    return_access_token: true
  register: matrix_admin
  no_log: true

- name: Ensure a user, through a port-forward to the Synapse main pod
  matrix.stack.matrix_user:
    kube_namespace: matrix
    kube_service: synapse-main
    admin_token: "{{ matrix_admin_token }}"
    user: alice
    password: "{{ alice_initial_password }}"
    displayname: Alice
    emails: [alice@example.org]

- name: Many users in one task
  matrix.stack.matrix_user:
    homeserver_url: http://127.0.0.1:8008
    admin_token: "{{ matrix_admin_token }}"
    users:
      - user: bob
        displayname: Bob
      - user: "@carol:example.org"
        admin: true
      - user: mallory
        state: absent

- name: Deactivate (reversible)
  matrix.stack.matrix_user:
    homeserver_url: http://127.0.0.1:8008
    admin_token: "{{ matrix_admin_token }}"
    user: dave
    state: deactivated
"""

RETURN = r"""
user_id:
  description: Full user ID (single-user form).
  returned: when O(user) is used
  type: str
  sample: "@alice:example.org"
created:
  description: Whether the user was (or, in check mode, would be) created (single-user form).
  returned: when O(user) is used
  type: bool
user:
  description:
    - The user as Synapse reports it after the task, plus C(emails) (single-user form).
    - Not returned in check mode when a change was predicted, nor for users that do not exist.
  returned: when O(user) is used and the user exists
  type: dict
  sample: {"name": "@alice:example.org", "admin": false, "deactivated": false, "displayname": "Alice",
           "emails": ["alice@example.org"], "locked": false, "user_type": null}
results:
  description: Per-user results of the O(users) form, in the same order.
  returned: when O(users) is used
  type: list
  elements: dict
  contains:
    user_id:
      description: Full user ID.
      type: str
    changed:
      description: Whether this user changed.
      type: bool
    created:
      description: Whether this user was created.
      type: bool
    state:
      description: Requested state.
      type: str
    user:
      description:
        - The user after the task (as RV(user)), for users that changed only (keeps the result small for
          large lists; use M(matrix.stack.matrix_user_info) to read users).
      type: dict
    diff:
      description: Before/after of the managed attributes (diff mode only).
      type: dict
summary:
  description: Counts of users by outcome.
  returned: always
  type: dict
  sample: {"total": 200, "changed": 0, "created": 0, "unchanged": 200, "failed": 0}
bootstrapped:
  description:
    - How the access token was obtained with O(registration_shared_secret) (V(registered), V(logged_in)), or V(null)
      when O(admin_token) was used.
    - When both are given and Synapse rejects O(admin_token) (HTTP 401, for example after a logout), the module
      bootstraps a new token and also returns RV(token_rejected).
  returned: always
  type: str
token_rejected:
  description: O(admin_token) was rejected and a new token was bootstrapped instead.
  returned: when that happened
  type: bool
access_token:
  description: The access token the task used. Secret; the whole task result is hidden like a C(no_log) task.
  returned: when O(return_access_token=true)
  type: str
http:
  description: Number of HTTP requests sent and the retries that happened (reason and wait in seconds).
  returned: always
  type: dict
  sample: {"requests": 3, "retries": [{"reason": "429 rate limited", "waited": 1.2}]}
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
from ansible_collections.matrix.stack.plugins.module_utils.synapse.ids import UserIdError, parse_user_id
from ansible_collections.matrix.stack.plugins.module_utils.synapse.planning import UserSpecError
from ansible_collections.matrix.stack.plugins.module_utils.synapse.transport import SynapseAdminError
from ansible_collections.matrix.stack.plugins.module_utils.synapse.users import UserManager

PER_USER = ("password", "update_password", "admin", "displayname", "emails", "user_type", "locked",
            "logout_devices", "state")
# Failures that concern one user only; a bulk run goes on with the others.
PER_USER_STATUSES = (400, 409)


def argument_spec():
    spec = connection_argument_spec()
    user_fields = dict(
        password=dict(type="str", no_log=True),
        update_password=dict(type="str", choices=["on_create", "always"], no_log=False),
        admin=dict(type="bool"),
        displayname=dict(type="str"),
        emails=dict(type="list", elements="str"),
        user_type=dict(type="str"),
        locked=dict(type="bool"),
        logout_devices=dict(type="bool"),
        state=dict(type="str", choices=["present", "deactivated", "absent"]),
    )
    spec.update(user_fields)
    spec["update_password"] = dict(type="str", choices=["on_create", "always"], default="on_create", no_log=False)
    spec["state"] = dict(type="str", choices=["present", "deactivated", "absent"], default="present")
    spec["user"] = dict(type="str")
    users_options = dict(user=dict(type="str", required=True))
    users_options.update(user_fields)
    spec["users"] = dict(type="list", elements="dict", options=users_options)
    spec["return_access_token"] = dict(type="bool", default=False, no_log=False)
    return spec


def build_specs(params):
    if params["user"] is not None:
        return [dict(user=params["user"], **{k: params[k] for k in PER_USER})]
    specs = []
    for entry in params["users"]:
        spec = {"user": entry["user"]}
        for key in PER_USER:
            spec[key] = entry.get(key) if entry.get(key) is not None else params[key]
        specs.append(spec)
    return specs


def bootstrap(module, client, spec):
    """Obtain an admin token with the shared secret: register the user, or log in if it exists."""
    if spec["password"] is None:
        raise UserSpecError("registration_shared_secret needs the admin's password (first user)")
    if spec["state"] != "present" or spec["admin"] is False:
        raise UserSpecError("registration_shared_secret bootstraps an admin: the first user must have "
                            "state=present and admin not false")
    localpart, _server_part = parse_user_id(spec["user"])
    resp = client.register_shared_secret(
        module.params["registration_shared_secret"], localpart, spec["password"], admin=True,
        user_type=spec["user_type"] or None, displayname=spec["displayname"])
    how = "registered"
    if resp is None:
        resp = client.login_password(localpart, spec["password"])
        how = "logged_in"
    token = resp.get("access_token")
    if not token:
        raise SynapseAdminError("The homeserver returned no access token")
    client.access_token = token
    return how, resp.get("user_id")


def run(module):
    params = module.params
    specs = build_specs(params)
    result = {"changed": False, "bootstrapped": None}
    summary = {"total": len(specs), "changed": 0, "created": 0, "unchanged": 0, "failed": 0}
    results = []
    bulk = params["users"] is not None

    # Validate what can be validated before any request.
    for index, spec in enumerate(specs):
        try:
            parse_user_id(spec["user"])
        except UserIdError as exc:
            module.fail_json(msg="users[%d]: %s" % (index, exc) if bulk else str(exc), summary=summary)

    if not params["admin_token"] and not params["registration_shared_secret"]:
        module.fail_json(msg="One of admin_token or registration_shared_secret is required")
    if not specs:
        if not params["admin_token"]:
            module.fail_json(msg="users is empty: there is no admin to bootstrap with registration_shared_secret")
        module.exit_json(changed=False, results=[], summary=summary, bootstrapped=None,
                         http={"requests": 0, "retries": []})

    conn = Connection(params)
    try:
        with conn as client:
            server_name = None
            if client.access_token and params["registration_shared_secret"]:
                # A stored token may have been logged out: fall back to bootstrapping.
                try:
                    server_name = discover_server_name(client, params["server_name"])
                except SynapseAdminError as exc:
                    if exc.status != 401:
                        raise
                    module.warn("admin_token was rejected (401); bootstrapping a new token with the shared secret")
                    client.access_token = None
                    result["token_rejected"] = True
            if not client.access_token:
                if module.check_mode:
                    module.warn("Check mode without admin_token: the users cannot be looked up without writing "
                                "(shared-secret registration or login); reporting a change.")
                    summary.update(changed=len(specs))
                    module.exit_json(changed=True, summary=summary, bootstrapped=None,
                                     http={"requests": client.request_count, "retries": client.retry_log},
                                     **({"results": []} if bulk else {}))
                if any(parse_user_id(spec["user"])[1] is not None for spec in specs):
                    # Full user IDs: refuse those of another server before registering anything.
                    server_name = params["server_name"] or client.server_name_from_keys()
                    if not server_name:
                        raise SynapseAdminError("Cannot discover the homeserver's server_name to check the full user "
                                                "IDs before bootstrapping: set the server_name option")
                    UserManager(client, server_name).resolve([dict(spec) for spec in specs])
                how, registered_id = bootstrap(module, client, specs[0])
                module.no_log_values.add(client.access_token)
                result["bootstrapped"] = how
                server_name = server_name or params["server_name"] or registered_id.split(":", 1)[1]
            elif server_name is None:
                server_name = discover_server_name(client, params["server_name"])
            manager = UserManager(client, server_name, check_mode=module.check_mode, diff=module._diff,
                                  user_objects="changed" if bulk else "always")
            manager.resolve(specs)
            if result["bootstrapped"] == "registered":
                specs[0]["_bootstrapped_created"] = True
            manager.prefetch(specs)
            failures = []
            for spec in specs:
                try:
                    res = manager.ensure(spec)
                except (SynapseAdminError, UserSpecError) as exc:
                    status = getattr(exc, "status", None)
                    if bulk and (isinstance(exc, UserSpecError) or status in PER_USER_STATUSES):
                        failures.append("%s: %s" % (spec["user_id"], exc))
                        res = {"user_id": spec["user_id"], "state": spec["state"], "changed": False,
                               "created": False, "failed": True, "msg": str(exc)}
                    else:
                        raise
                if spec.get("_bootstrapped_created"):
                    res["created"] = True
                    res["changed"] = True
                    if "diff" in res:
                        res["diff"]["before"] = {"exists": False}
                results.append(res)
                if res.get("failed"):
                    summary["failed"] += 1
                elif res["changed"]:
                    summary["changed"] += 1
                    summary["created"] += int(res["created"])
                else:
                    summary["unchanged"] += 1
            result["http"] = {"requests": client.request_count, "retries": client.retry_log}
            if params["return_access_token"]:
                result["access_token"] = client.access_token
                module.no_log_values.discard(client.access_token)
    except (SynapseAdminError, UserSpecError) as exc:
        http = {"requests": conn.client.request_count, "retries": conn.client.retry_log} if conn.client else {}
        changed = summary["changed"] > 0 or result["bootstrapped"] == "registered"
        module.fail_json(msg=conn.explain(exc), summary=summary, changed=changed, http=http,
                         bootstrapped=result["bootstrapped"],
                         **({"results": results} if bulk else {}))

    result["summary"] = summary
    result["changed"] = summary["changed"] > 0
    if bulk:
        result["results"] = results
        if module._diff:
            before = {r["user_id"]: r["diff"]["before"] for r in results if r.get("changed") and "diff" in r}
            after = {r["user_id"]: r["diff"]["after"] for r in results if r.get("changed") and "diff" in r}
            result["diff"] = {"before": before, "after": after}
        if failures:
            module.fail_json(msg="%d of %d users failed: %s" % (len(failures), len(specs), "; ".join(failures[:20])),
                             **result)
    else:
        res = results[0]
        result["user_id"] = res["user_id"]
        result["created"] = res["created"]
        if "user" in res:
            result["user"] = res["user"]
        if "diff" in res:
            result["diff"] = res["diff"]
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[("user", "users")] + CONNECTION_MUTUALLY_EXCLUSIVE,
        required_one_of=[("user", "users")] + CONNECTION_REQUIRED_ONE_OF,
        required_by=CONNECTION_REQUIRED_BY,
    )
    run(module)


if __name__ == "__main__":
    main()
