# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Secrets of the apply step: operator-supplied ones must exist, generated ones get their missing keys.

Generation follows matrix.stack.matrix_secret exactly (its planning functions: CSPRNG values, only missing keys,
existing keys never changed, foreign Secrets refused); diffs and results carry key names only, never values.
"""

import time

from ansible_collections.matrix.stack.plugins.module_utils.kube.errors import KubeConflictError, KubeError
from ansible_collections.matrix.stack.plugins.module_utils.kube.secrets import create_secret, get_secret, replace_secret
from ansible_collections.matrix.stack.plugins.module_utils.secrets.generators import SecretSpecError
from ansible_collections.matrix.stack.plugins.module_utils.secrets.planning import (
    ForeignSecretError, build_body, key_diff, plan_present, validate_request)
from ansible_collections.matrix.stack.plugins.plugin_utils._apply import plan

ATTEMPTS = 3


def check_refs(kube, namespace, refs, parallel):
    """Fail (KubeError naming every variable) when an operator-supplied Secret or key is missing."""
    names = sorted({ref["name"] for ref in refs})
    found = dict(zip(names, parallel(lambda name: get_secret(kube.api_client, namespace, name), names)))
    missing = plan.missing_refs(refs, found)
    if missing:
        raise KubeError("Referenced Secret(s) missing, nothing else was applied: " + "; ".join(
            "%s: Secret %s with key %s not found in namespace %s" % (ref["variable"], ref["name"], ref["key"], namespace)
            for ref in missing))


def ensure_one(kube, namespace, component, secret):
    """Create the Secret or add its missing keys; returns (changed, diff entry or None, summary).

    ``component`` is the handed-over component: its ``secret_labels`` plus ``app.kubernetes.io/name`` (the
    Secret's ``app``) label the Secret.
    """
    name = secret["name"]
    labels = dict(component.get("secret_labels") or {})
    if secret.get("app"):
        labels["app.kubernetes.io/name"] = secret["app"]
    component = component["name"]
    try:
        specs = validate_request(secret.get("keys_") or [], [], labels)
    except SecretSpecError as exc:
        raise KubeError("Secret %s of %s: %s" % (name, component, exc)) from None
    for _attempt in range(ATTEMPTS):
        existing = get_secret(kube.api_client, namespace, name)
        try:
            decided = plan_present(existing, specs, [], labels, False, int(time.time() * 1000), namespace, name)
        except (ForeignSecretError, SecretSpecError) as exc:
            raise KubeError(str(exc)) from None
        summary = {"name": name, "component": component, "generated": decided["generated"],
                   "kept": decided["kept"]}
        if not decided["changed"]:
            return False, None, summary
        body = build_body(existing, decided, namespace, name)
        try:
            if existing is None:
                create_secret(kube.api_client, namespace, body, dry_run=kube.dry_run)
            else:
                replace_secret(kube.api_client, namespace, body, dry_run=kube.dry_run)
        except KubeConflictError:
            continue  # written meanwhile by someone else: read again and decide again
        before, after = key_diff(decided["current"], decided)
        diff = {"before": {} if existing is None else before, "after": after,
                "before_header": "Secret/%s%s" % (name, " (absent)" if existing is None else ""),
                "after_header": "Secret/%s (key names only)" % name}
        return True, diff, summary
    raise KubeError("Secret %s/%s kept changing while trying to update it; try again" % (namespace, name))


def ensure(kube, namespace, refs, generated, parallel, namespace_exists):
    """Check the references, then create the generated Secrets. Check mode: dry runs (nothing is written)."""
    if refs and namespace_exists:
        check_refs(kube, namespace, refs, parallel)
    if not namespace_exists:
        # Check mode before the namespace exists: every generated Secret would be created.
        diffs = [{"before": {}, "after": {"keys": sorted(k["name"] for k in secret.get("keys_") or [])},
                  "before_header": "Secret/%s (absent)" % secret["name"],
                  "after_header": "Secret/%s (key names only)" % secret["name"]} for _c, secret in generated]
        return {"changed": bool(generated), "diffs": diffs,
                "summary": [{"name": secret["name"], "component": component["name"], "generated": "all", "kept": []}
                            for component, secret in generated]}
    outcomes = parallel(lambda item: ensure_one(kube, namespace, item[0], item[1]), generated)
    return {"changed": any(changed for changed, _diff, _summary in outcomes),
            "diffs": [diff for _changed, diff, _summary in outcomes if diff],
            "summary": [summary for _changed, _diff, summary in outcomes]}
