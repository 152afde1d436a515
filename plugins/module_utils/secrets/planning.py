# -*- coding: utf-8 -*-
# Copyright: (c) 2026, matrix.stack developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a Secret managed by matrix_secret (and the apply step) must become, without API access.

``validate_request`` checks the keys option; ``plan_present`` (pure: the Secret read, the specs, the clock) decides
the new data, which keys are generated, rotated, stored, updated or kept, and the labels; ``build_body`` makes the
object to create or PUT; ``key_diff`` and ``secret_summary`` describe it with key names only, never values.
"""

from ansible_collections.matrix.stack.plugins.module_utils.kube.secrets import decode_secret_data, encode_secret_data
from ansible_collections.matrix.stack.plugins.module_utils.secrets.generators import (
    PROVIDED_TYPE, SecretSpecError, generate, normalize_key_spec, old_signing_keys_name)
from ansible_collections.matrix.stack.plugins.module_utils.secrets.signing_keys import (
    SigningKeyFormatError, empty_old_signing_keys, retire_signing_keys, versions_in_use)

OWNED_LABEL = "matrix.stack/secret"
OWNED_VALUE = "true"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "matrix.stack"
OWNERSHIP_LABELS = {OWNED_LABEL: OWNED_VALUE, MANAGED_BY_LABEL: MANAGED_BY_VALUE}


class ForeignSecretError(Exception):
    """The Secret exists without the ownership label and adopt is false."""


# ----- validation (no API access) ----------------------------------------------------------------
def validate_request(keys, rotate, labels):
    """Normalise the keys option and check rotate / labels. Returns the list of normalised specs.

    Raises SecretSpecError with a message that never contains a value.
    """
    specs = [normalize_key_spec(k) for k in keys]
    names = [s["name"] for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SecretSpecError("duplicate key names in keys: %s" % ", ".join(duplicates))
    for spec in specs:
        if spec["type"] == "signing_key":
            companion = old_signing_keys_name(spec["name"])
            if companion in names:
                raise SecretSpecError("key %r is reserved for the old public keys of signing key %r"
                                      % (companion, spec["name"]))
            if len(companion) > 253:
                raise SecretSpecError("signing key name %r is too long: %r must be at most 253 characters"
                                      % (spec["name"], companion))
    by_name = {s["name"]: s for s in specs}
    for name in rotate:
        if name not in by_name:
            raise SecretSpecError("rotate names %r, which is not in keys" % name)
        if by_name[name]["type"] == PROVIDED_TYPE:
            raise SecretSpecError("rotate names %r, a supplied value; change its value instead" % name)
    for label, value in OWNERSHIP_LABELS.items():
        if label in labels and str(labels[label]) != value:
            raise SecretSpecError("label %s is the ownership label of matrix.stack and must stay %r"
                                  % (label, value))
    return specs


def is_owned(secret):
    labels = ((secret or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(OWNED_LABEL) == OWNED_VALUE


# ----- planning (no API access) ------------------------------------------------------------------
def plan_present(existing, specs, rotate, labels, adopt, now_ms, namespace, name):
    """Compute what the Secret must become.

    ``existing`` is the Secret dict from the API (or None). Returns a dict with ``data`` (the new {key: bytes}),
    ``current`` (the old {key: bytes}), the name lists, ``labels`` (desired) and ``changed``.
    Raises ForeignSecretError, SecretSpecError.
    """
    adopted = False
    if existing is not None and not is_owned(existing):
        if not adopt:
            raise ForeignSecretError(
                "Secret %s/%s exists but is not managed by matrix.stack (label %s=%s missing); refusing to change it. "
                "Set adopt: true to take it over (its existing keys are kept)." % (namespace, name, OWNED_LABEL,
                                                                                   OWNED_VALUE))
        adopted = True
    current = decode_secret_data(existing) if existing is not None else {}
    data = dict(current)
    result = dict(generated=[], rotated=[], stored=[], updated=[], kept=[], retired_key_ids=[])
    rotate = set(rotate)

    for spec in specs:
        key = spec["name"]
        ktype = spec["type"]
        if ktype == PROVIDED_TYPE:
            if key not in current:
                data[key] = spec["value"]
                result["stored"].append(key)
            elif current[key] != spec["value"]:
                data[key] = spec["value"]
                result["updated"].append(key)
            else:
                result["kept"].append(key)
            continue

        companion = old_signing_keys_name(key) if ktype == "signing_key" else None
        if key not in current:
            taken = versions_in_use(None, current.get(companion)) if companion else ()
            data[key] = generate(ktype, spec["length"], taken_versions=taken)
            result["generated"].append(key)
        elif key in rotate:
            if companion:
                try:
                    taken = versions_in_use(current[key], current.get(companion))
                    new_doc, retired = retire_signing_keys(current.get(companion), current[key], now_ms)
                except SigningKeyFormatError as exc:
                    raise SecretSpecError(
                        "cannot rotate %r: the stored value or %s is not in the expected format (%s), so the old public "
                        "key cannot be kept for old_signing_keys; repair or delete the key first"
                        % (key, companion, exc)) from None
                data[key] = generate(ktype, spec["length"], taken_versions=taken)
                data[companion] = new_doc
                result["retired_key_ids"].extend(retired)
            else:
                data[key] = generate(ktype, spec["length"])
            result["rotated"].append(key)
        else:
            result["kept"].append(key)

        if companion:
            if companion not in current:
                if companion not in data:
                    data[companion] = empty_old_signing_keys()
                result["generated"].append(companion)
            elif data[companion] != current[companion]:
                result["updated"].append(companion)
            else:
                result["kept"].append(companion)

    existing_labels = dict(((existing or {}).get("metadata") or {}).get("labels") or {})
    desired_labels = dict(existing_labels)
    desired_labels.update({k: str(v) for k, v in labels.items()})
    desired_labels.update(OWNERSHIP_LABELS)

    result.update(
        current=current,
        data=data,
        existing_labels=existing_labels,
        labels=desired_labels,
        adopted=adopted,
        data_changed=data != current,
        labels_changed=desired_labels != existing_labels,
    )
    result["changed"] = existing is None or result["data_changed"] or result["labels_changed"]
    return result


def build_body(existing, plan, namespace, name):
    """The Secret to create (existing is None) or to PUT (with the resourceVersion that was read)."""
    if existing is None:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "labels": plan["labels"]},
            "type": "Opaque",
            "data": encode_secret_data(plan["data"]),
        }
    body = dict(existing)
    metadata = dict(existing.get("metadata") or {})
    metadata.pop("managedFields", None)
    metadata["labels"] = plan["labels"]
    body["metadata"] = metadata
    body["data"] = encode_secret_data(plan["data"])
    body.pop("stringData", None)
    return body


def key_diff(current, plan=None):
    """Diff dicts with names only: {"keys": {name: state}, "labels": {...}}."""
    before = {"keys": {k: "present" for k in sorted(current)}}
    if plan is None:
        return before
    after = {"keys": {k: "present" for k in sorted(plan["data"])}}
    for state in ("generated", "rotated", "stored", "updated"):
        for key in plan[state]:
            after["keys"][key] = state
    before["labels"] = plan["existing_labels"]
    after["labels"] = plan["labels"]
    return before, after


def secret_summary(secret, fallback_name, fallback_namespace, data=None, labels=None):
    if secret is None and data is None:
        return {}
    metadata = (secret or {}).get("metadata") or {}
    summary = {
        "name": metadata.get("name", fallback_name),
        "namespace": metadata.get("namespace", fallback_namespace),
        "labels": labels if labels is not None else metadata.get("labels") or {},
        "keys": sorted(data if data is not None else ((secret or {}).get("data") or {})),
    }
    if metadata.get("uid"):
        summary["uid"] = metadata["uid"]
    if metadata.get("resourceVersion"):
        summary["resource_version"] = metadata["resourceVersion"]
    return summary


def empty_result():
    return dict(changed=False, generated=[], rotated=[], stored=[], updated=[], kept=[], deleted=False,
                adopted=False, retired_key_ids=[], secret={})
