#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, matrix.stack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: matrix_secret
short_description: Ensure a Kubernetes Secret holds a set of generated or supplied keys
version_added: 0.1.0
description:
  - Ensures that the Secret O(name) in O(namespace) contains every key listed in O(keys).
  - Missing keys are generated with the operating system's CSPRNG (or stored, for operator supplied values).
    Existing generated keys are B(never) changed, unless they are named in O(rotate).
  - The Secret carries the ownership labels C(matrix.stack/secret=true) and
    C(app.kubernetes.io/managed-by=matrix.stack). A Secret without C(matrix.stack/secret=true) is not
    touched (neither updated nor deleted) unless O(adopt=true).
  - Keys present in the Secret but not listed in O(keys) are left alone.
  - Writes are guarded by the Secret's C(resourceVersion); when the Secret changes between read and write the
    module reads it again and recomputes, so concurrent runs never overwrite each other's keys.
  - Values never appear in the module's output, in diffs or in logs. They are only returned with
    O(return_values=true), and then the whole task result is marked C(no_log) so Ansible hides it.
author:
  - matrix.stack contributors (!UNKNOWN)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Nothing is written. When the Secret would change, the write is sent as a server-side dry run so that
        RBAC and validation errors show up in check mode too.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details:
      - The diff shows key B(names) and what happens to them (V(present), V(generated), V(rotated),
        V(stored), V(updated)) and the labels, never a value.
  action_group:
    description: Use C(group/matrix.stack.matrix) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - matrix.stack.matrix
options:
  namespace:
    description:
      - Namespace of the Secret. It must exist.
    type: str
    required: true
  name:
    description:
      - Name of the Secret.
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the Secret.
      - V(absent) deletes the whole Secret (only an owned one, or a foreign one with O(adopt=true)); O(keys) and
        O(rotate) are ignored then.
    type: str
    choices: [present, absent]
    default: present
  keys:
    description:
      - The keys the Secret must hold.
      - Each generated key of type V(signing_key) also gets a companion key C(<name>.old.yaml) that records retired
        public keys for Synapse's C(old_signing_keys), see RV(old_signing_keys).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - Key name inside the Secret (a valid Secret key, V([-._a-zA-Z0-9]+), at most 253 characters, not
            V(.) or V(..), not starting with V(..)).
        type: str
        required: true
      type:
        description:
          - How the value is made.
          - V(signing_key) is a Synapse signing key file line C(ed25519 <version> <seed>) where the seed is the
            unpadded base64 of a random 32-byte ed25519 private seed and the version is C(a_) followed by 8 random
            letters and digits (the key id is C(ed25519:<version>)).
          - V(alnum) is random letters and digits.
          - V(hex) is random bytes, hex encoded (lower case).
          - V(base64) is random bytes, standard base64 with padding.
          - V(password) is random letters, digits and the symbols C(-._~) with at least one of each class.
          - V(rsa) and V(ecdsa) are unencrypted PKCS#8 PEM private keys.
          - V(provided) stores the supplied O(keys[].value) or the content of O(keys[].value_from_file); such
            keys are never generated and are updated when the supplied value changes. It is the default when
            a value is supplied.
          - Required unless O(keys[].value) or O(keys[].value_from_file) is set.
        type: str
        choices: [signing_key, alnum, hex, base64, password, rsa, ecdsa, provided]
      length:
        description:
          - V(alnum), V(password) - number of characters (default 64 and 32, 16 to 4096).
          - V(hex), V(base64) - number of random bytes (default 32, 16 to 2048); the value is longer.
          - V(rsa) - key size in bits, 2048, 3072 or 4096 (default 4096).
          - V(ecdsa) - curve, 256 (P-256, default), 384 (P-384) or 521 (P-521).
          - Not accepted for V(signing_key) and V(provided).
        type: int
      value:
        description:
          - The value to store (for operator supplied secrets such as an SMTP password).
          - Mutually exclusive with O(keys[].value_from_file).
        type: str
      value_from_file:
        description:
          - Path of a file on the managed node whose exact content (bytes, trailing newline included) is stored.
          - Mutually exclusive with O(keys[].value).
        type: path
  rotate:
    description:
      - Names (from O(keys)) of generated keys to regenerate on purpose.
      - Every run with a key listed here generates a new value, so set it only for the run that should rotate.
      - Rotating a V(signing_key) moves its public key into the companion key C(<name>.old.yaml) with
        C(expired_ts) set to the current time.
      - Supplied (V(provided)) keys cannot be rotated; change their value instead.
    type: list
    elements: str
    default: []
  labels:
    description:
      - Extra labels to set on the Secret. Labels not listed here are left unchanged.
      - The ownership labels C(matrix.stack/secret) and C(app.kubernetes.io/managed-by) cannot be overridden.
    type: dict
    default: {}
  adopt:
    description:
      - Take over (or, with O(state=absent), delete) an existing Secret that lacks the ownership label.
      - Existing keys of an adopted Secret are kept as they are; only missing keys are added.
    type: bool
    default: false
  return_values:
    description:
      - Return the values of the keys in O(keys) in RV(values).
      - The task result is then flagged C(no_log), so Ansible hides the whole result (including the key names)
        in all output at every verbosity. Tasks that use the registered values must set C(no_log) themselves.
      - In check mode only values that already exist are returned (their current values).
    type: bool
    default: false
notes:
  - "Format of the companion key C(<name>.old.yaml) of a signing key: a JSON document (therefore also YAML and a
    valid Synapse configuration file) C({\"old_signing_keys\": {\"ed25519:<version>\": {\"expired_ts\": <ms>,
    \"key\": \"<unpadded base64 public key>\"}}}) with sorted keys. C(expired_ts) is in milliseconds since the
    epoch. It starts as C({\"old_signing_keys\": {}}). It can be passed to Synapse as an extra C(-c) config file."
  - Keys are compared byte for byte; nothing is ever re-encoded, so re-runs leave the Secret byte-identical.
  - The identity used needs C(get), C(create) and C(update) on Secrets in the namespace (C(delete) for
    O(state=absent)).
seealso:
  - name: matrix.stack secrets documentation
    description: docs/secrets.md in the collection (key layout, rotation, old signing keys).
    link: https://example.invalid/PLACEHOLDER/matrix.stack/docs/secrets.md
"""

EXAMPLES = r"""
- name: Ensure the Synapse secrets exist
  matrix.stack.matrix_secret:
    kubeconfig: ~/.kube/matrix.yaml
    namespace: matrix
    name: synapse-secrets
    keys:
      - name: signing.key
        type: signing_key
      - name: macaroon_secret_key
        type: alnum
      - name: registration_shared_secret
        type: alnum
        length: 64
      - name: form_secret
        type: alnum
      - name: postgres_password
        type: password
      - name: smtp_password
        value: "{{ vault_smtp_password }}"
    labels:
      app.kubernetes.io/part-of: matrix

- name: Keys for Matrix Authentication Service
  matrix.stack.matrix_secret:
    namespace: matrix
    name: mas-secrets
    keys:
      - name: encryption
        type: hex
        length: 32
      - name: rsa.pem
        type: rsa
        length: 4096
      - name: ec256.pem
        type: ecdsa
        length: 256

- name: Rotate the signing key (the old public key is kept in signing.key.old.yaml)
  matrix.stack.matrix_secret:
    namespace: matrix
    name: synapse-secrets
    keys:
      - name: signing.key
        type: signing_key
    rotate:
      - signing.key

- name: Set the connection once for every matrix.stack module
  module_defaults:
    group/matrix.stack.matrix:
      kubeconfig: /etc/matrix/kubeconfig
      context: prod
  block:
    - name: Get the admin password for a later task (the result is hidden)
      matrix.stack.matrix_secret:
        namespace: matrix
        name: admin-credentials
        keys:
          - name: password
            type: password
        return_values: true
      register: admin_secret

- name: Take over a Secret created by hand, keeping its keys
  matrix.stack.matrix_secret:
    namespace: matrix
    name: legacy-secrets
    adopt: true
    keys:
      - name: turn_shared_secret
        type: alnum

- name: Delete the Secret
  matrix.stack.matrix_secret:
    namespace: matrix
    name: synapse-secrets
    state: absent
"""

RETURN = r"""
generated:
  description: Keys that did not exist and were generated (including new C(<name>.old.yaml) companions).
  returned: always
  type: list
  elements: str
  sample: [signing.key, signing.key.old.yaml, macaroon_secret_key]
rotated:
  description: Keys named in O(rotate) that received a new value.
  returned: always
  type: list
  elements: str
  sample: [signing.key]
stored:
  description: Supplied (V(provided)) keys that did not exist and were stored.
  returned: always
  type: list
  elements: str
  sample: [smtp_password]
updated:
  description:
    - Existing keys whose value was changed without being regenerated, that is supplied keys whose value
      changed and C(<name>.old.yaml) companions that recorded a retired signing key.
  returned: always
  type: list
  elements: str
  sample: [signing.key.old.yaml]
kept:
  description: Listed keys (and companions) that exist and were left unchanged.
  returned: always
  type: list
  elements: str
  sample: [form_secret]
deleted:
  description: Whether the Secret was deleted (O(state=absent)).
  returned: always
  type: bool
  sample: false
adopted:
  description: Whether a Secret without the ownership label was taken over (or deleted) in this run.
  returned: always
  type: bool
  sample: false
public_keys:
  description:
    - For each key of type V(signing_key), its key id and unpadded base64 ed25519 public key (public data).
    - In check mode, only for signing keys that already exist (the current key).
  returned: when O(state=present)
  type: dict
  sample:
    signing.key:
      key_id: "ed25519:a_x7Kq29Pb"
      public_key: "M7fzWy4lHOjl+aDuG0pZdI+Vwz+fz0JjX8dHkXv0w5c"
old_signing_keys:
  description:
    - For each key of type V(signing_key), the content of its companion C(<name>.old.yaml) key (public keys of
      retired signing keys, for Synapse's C(old_signing_keys)).
  returned: when O(state=present)
  type: dict
  sample:
    signing.key:
      "ed25519:a_Ab12Cd34":
        key: "l8Hft5qXKn1vxMqLgdKdU1tEAJ3Vx7bNzRXoYXHwVbw"
        expired_ts: 1795305600000
retired_key_ids:
  description: Ids of signing keys retired in this run (moved to C(old_signing_keys)).
  returned: always
  type: list
  elements: str
  sample: ["ed25519:a_Ab12Cd34"]
secret:
  description: Metadata of the Secret after the run (no data). Empty when the Secret does not exist.
  returned: always
  type: dict
  contains:
    name:
      description: Secret name.
      type: str
      sample: synapse-secrets
    namespace:
      description: Secret namespace.
      type: str
      sample: matrix
    uid:
      description: Secret uid (absent in check mode when the Secret would be created).
      type: str
      sample: 5f0c7d0e-8d8c-4a55-bb3c-8d0b5cf5a9a2
    resource_version:
      description: Secret resourceVersion.
      type: str
      sample: "12345"
    labels:
      description: Secret labels.
      type: dict
      sample: {"matrix.stack/secret": "true", "app.kubernetes.io/managed-by": "matrix.stack"}
    keys:
      description: Names of all keys in the Secret, sorted.
      type: list
      elements: str
      sample: [form_secret, signing.key, signing.key.old.yaml]
values:
  description:
    - Values of the keys listed in O(keys), as text. Keys whose value is not valid UTF-8 are left out (with a
      warning).
    - The task result is flagged C(no_log) when this is returned.
  returned: when O(return_values=true) and O(state=present)
  type: dict
  sample: {"postgres_password": "VALUE"}
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.parameters import remove_values

from ansible_collections.matrix.stack.plugins.module_utils.kube.client import build_api_client, kube_auth_argument_spec, require_kubernetes
from ansible_collections.matrix.stack.plugins.module_utils.kube.errors import KubeConflictError, KubeError, KubeNamespaceNotFoundError, fail_kube
from ansible_collections.matrix.stack.plugins.module_utils.kube.secrets import create_secret, decode_secret_data, delete_secret, get_secret, replace_secret
from ansible_collections.matrix.stack.plugins.module_utils.secrets.generators import ALL_TYPES, SecretSpecError, old_signing_keys_name
from ansible_collections.matrix.stack.plugins.module_utils.secrets.planning import (
    OWNED_LABEL, OWNED_VALUE, ForeignSecretError, build_body, empty_result, is_owned, key_diff, plan_present,
    secret_summary, validate_request)
from ansible_collections.matrix.stack.plugins.module_utils.secrets.signing_keys import (
    SigningKeyFormatError, parse_old_signing_keys, signing_key_public_keys)

MAX_ATTEMPTS = 5
# Values shorter than this are not added to the masking set by the module itself (supplied values are masked by
# Ansible anyway, being no_log options); generated values are always longer.
MIN_MASKED_LENGTH = 8


def argument_spec():
    spec = dict(
        namespace=dict(type="str", required=True),
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        keys=dict(type="list", elements="dict", default=[], no_log=False, options=dict(
            name=dict(type="str", required=True),
            type=dict(type="str", choices=list(ALL_TYPES)),
            length=dict(type="int"),
            value=dict(type="str", no_log=True),
            value_from_file=dict(type="path"),
        )),
        rotate=dict(type="list", elements="str", default=[]),
        labels=dict(type="dict", default={}),
        adopt=dict(type="bool", default=False),
        return_values=dict(type="bool", default=False),
    )
    spec.update(kube_auth_argument_spec())
    return spec


def signing_key_info(module, specs, data):
    public, old = {}, {}
    for spec in specs:
        if spec["type"] != "signing_key" or spec["name"] not in data:
            continue
        key = spec["name"]
        try:
            keys = signing_key_public_keys(data[key])
            key_id, public_key = next(iter(keys.items()))
            public[key] = {"key_id": key_id, "public_key": public_key}
        except SigningKeyFormatError as exc:
            module.warn("the value of key %r is not a Synapse signing key (%s); no public key returned" % (key, exc))
        try:
            old[key] = parse_old_signing_keys(data.get(old_signing_keys_name(key)))
        except SigningKeyFormatError as exc:
            module.warn("%s: %s" % (old_signing_keys_name(key), exc))
    return public, old


# ----- main --------------------------------------------------------------------------------------

def run_absent(module, client, namespace, name):
    result = empty_result()
    for _attempt in range(MAX_ATTEMPTS):
        existing = get_secret(client, namespace, name)
        if existing is None:
            if module._diff:
                result["diff"] = {"before": {}, "after": {}}
            return result
        if not is_owned(existing):
            if not module.params["adopt"]:
                module.fail_json(msg="Secret %s/%s exists but is not managed by matrix.stack (label %s=%s missing); "
                                     "refusing to delete it. Set adopt: true to delete it anyway."
                                     % (namespace, name, OWNED_LABEL, OWNED_VALUE), **result)
            result["adopted"] = True
        current = decode_secret_data(existing)
        metadata = existing.get("metadata") or {}
        try:
            delete_secret(client, namespace, name, resource_version=metadata.get("resourceVersion"),
                          uid=metadata.get("uid"), dry_run=module.check_mode)
        except KubeConflictError:
            continue
        result.update(changed=True, deleted=True, secret={})
        if module._diff:
            result["diff"] = {"before": key_diff(current), "after": {}}
        return result
    module.fail_json(msg="Secret %s/%s kept changing while trying to delete it; try again" % (namespace, name),
                     **result)


def run_present(module, client, namespace, name, specs):
    params = module.params
    result = empty_result()
    for _attempt in range(MAX_ATTEMPTS):
        existing = get_secret(client, namespace, name)
        now_ms = int(time.time() * 1000)
        try:
            plan = plan_present(existing, specs, params["rotate"], params["labels"], params["adopt"], now_ms,
                                namespace, name)
        except ForeignSecretError as exc:
            module.fail_json(msg=str(exc), **result)
        except SecretSpecError as exc:
            module.fail_json(msg=str(exc), **result)
        # Defence in depth: the values of the listed keys are masked should one ever reach a message. Keys that
        # are not listed (and the public .old.yaml companions) are never read into output, and registering a
        # short foreign value such as "1" would mask that character everywhere in the result.
        for spec in specs:
            if spec["name"] in plan["data"]:
                _register_no_log(module, plan["data"][spec["name"]])

        stored = existing
        if plan["changed"]:
            body = build_body(existing, plan, namespace, name)
            try:
                if existing is None:
                    stored = create_secret(client, namespace, body, dry_run=module.check_mode)
                else:
                    stored = replace_secret(client, namespace, body, dry_run=module.check_mode)
            except KubeConflictError:
                # Another writer changed or created the Secret since we read it: read again and recompute.
                continue
            except KubeNamespaceNotFoundError:
                if not module.check_mode:
                    raise
                module.warn("check mode: namespace %r does not exist (yet); a real run fails unless it is created "
                            "first" % namespace)
                stored = None

        for key in ("generated", "rotated", "stored", "updated", "kept", "adopted", "retired_key_ids"):
            result[key] = plan[key]
        result["changed"] = plan["changed"]
        # In check mode nothing was written: report what exists, not values that were generated and dropped.
        known = plan["current"] if module.check_mode else plan["data"]
        result["secret"] = secret_summary(existing if module.check_mode else stored, name, namespace,
                                          data=plan["data"], labels=plan["labels"])
        result["public_keys"], result["old_signing_keys"] = signing_key_info(module, specs, known)
        if module._diff:
            before, after = key_diff(plan["current"], plan)
            if existing is None:
                before = {}
            result["diff"] = {"before": before, "after": after}
        if params["return_values"]:
            values = {}
            for spec in specs:
                if spec["name"] not in known:
                    continue
                raw = known[spec["name"]]
                try:
                    values[spec["name"]] = raw.decode("utf-8")
                except UnicodeDecodeError:
                    module.warn("the value of key %r is not UTF-8 text and is not returned" % spec["name"])
            exit_with_values(module, result, values)
        module.exit_json(**result)
    module.fail_json(msg="Secret %s/%s kept changing while trying to update it; try again" % (namespace, name),
                     **result)


def _register_no_log(module, value):
    try:
        text = (value.decode("utf-8") if isinstance(value, bytes) else str(value)).strip()
    except UnicodeDecodeError:
        return
    if len(text) >= MIN_MASKED_LENGTH:
        module.no_log_values.add(text)
    # parts that are secret on their own: the seed of a signing key line, the base64 lines of a PEM key
    for token in text.split():
        if len(token) >= 16 and not token.startswith("-----"):
            module.no_log_values.add(token)


def exit_with_values(module, result, values):
    """Return ``values`` intact while hiding the result.

    AnsibleModule masks every no_log value wherever it appears in the result, which would replace the values
    themselves (or parts of them) with asterisks. So everything except ``values`` is masked here and the masking
    set is emptied. The action plugin (plugins/action/matrix_secret.py) then flags the result ``_ansible_no_log``
    so that Ansible censors it in every callback (a module cannot set that flag itself).
    """
    masked = remove_values(dict(result, invocation={"module_args": module.params}), module.no_log_values)
    module.no_log_values.clear()
    masked["values"] = values
    module.exit_json(**masked)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    require_kubernetes(module)
    params = module.params
    namespace, name = params["namespace"], params["name"]

    specs = []
    if params["state"] == "present":
        try:
            specs = validate_request(params["keys"], params["rotate"], params["labels"])
        except SecretSpecError as exc:
            module.fail_json(msg=str(exc))
        for spec in specs:
            if spec["value"] is not None:  # the content of value_from_file is not a module option
                _register_no_log(module, spec["value"])

    try:
        client = build_api_client(params)
    except KubeError as exc:
        fail_kube(module, exc)
    try:
        with client:
            if params["state"] == "absent":
                module.exit_json(**run_absent(module, client, namespace, name))
            run_present(module, client, namespace, name, specs)
    except KubeError as exc:
        fail_kube(module, exc)


if __name__ == "__main__":
    main()
