# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pieces every workload template of matrix.stack shares, defined once.

- ``restricted_pod_security_context``: the pod securityContext of Pod Security ``restricted``.
- ``restricted_container_security_context``: the container securityContext of Pod Security ``restricted``.
- ``pull_secrets``: ``imagePullSecrets`` from a list of Secret names.
- ``labels`` / ``selector_labels``: the app.kubernetes.io labels of a component of an instance.
- ``config_hash``: the pod-template annotation that rolls a workload when its configuration changes.
- ``cert_manager_annotations``: the Ingress annotation of a cert-manager issuer.
"""

import hashlib
import json
import re

from ansible.errors import AnsibleFilterError

from ansible_collections.matrix.stack.plugins.plugin_utils._apply.plan import (
    INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, PART_OF_LABEL, PART_OF_VALUE)

RUNTIME_DEFAULT = {"type": "RuntimeDefault"}


def restricted_pod_security_context(user, group=None, fs_group=None, fs_group_change_policy=None):
    """Pod securityContext: non-root with a fixed UID/GID and the runtime's default seccomp profile."""
    context = {"runAsNonRoot": True, "runAsUser": int(user), "runAsGroup": int(user if group is None else group)}
    if fs_group is not None:
        context["fsGroup"] = int(fs_group)
    if fs_group_change_policy:
        context["fsGroupChangePolicy"] = fs_group_change_policy
    context["seccompProfile"] = dict(RUNTIME_DEFAULT)
    return context


def restricted_container_security_context(read_only_root=True):
    """Container securityContext: no privilege escalation, no capability, read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": bool(read_only_root),
        "runAsNonRoot": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": dict(RUNTIME_DEFAULT),
    }


def pull_secrets(names):
    """imagePullSecrets entries of a list of Secret names."""
    if not isinstance(names, (list, tuple)):
        raise AnsibleFilterError("pull_secrets expects a list of Secret names, got %s" % type(names).__name__)
    return [{"name": str(name)} for name in names]


def label_value(value):
    """A string usable as a label value: other characters become '_', at most 63 characters."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(value))[:63]


def selector_labels(instance, name):
    """The labels that select the pods of component ``name`` of an instance (never change: selectors are immutable)."""
    return {"app.kubernetes.io/name": str(name), INSTANCE_LABEL: str(instance)}


def labels(instance, name, component, version, extra=None):
    """Every label of an object of component ``name``: the operator's extra labels under the app.kubernetes.io ones.

    The instance, part-of and managed-by labels are those the apply step selects this instance's objects by (pruning).
    ``name`` None leaves the name label out (the Secrets of a component carry none).
    """
    result = dict(extra or {})
    result.update({INSTANCE_LABEL: str(instance), PART_OF_LABEL: PART_OF_VALUE, MANAGED_BY_LABEL: MANAGED_BY_VALUE})
    if name is not None:
        result["app.kubernetes.io/name"] = str(name)
    result.update({"app.kubernetes.io/component": str(component), "app.kubernetes.io/version": label_value(version)})
    return result


def cert_manager_annotations(issuer, kind="ClusterIssuer"):
    """The Ingress annotation that makes cert-manager issue its certificate ({} without an issuer)."""
    if not issuer:
        return {}
    name = "cert-manager.io/cluster-issuer" if kind == "ClusterIssuer" else "cert-manager.io/issuer"
    return {name: str(issuer)}


def config_hash(data, *more):
    """sha256 of the canonical JSON of a ConfigMap's data (and anything else that must roll the pods)."""
    value = [data] + list(more) if more else data
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(", ", ": ")).encode()).hexdigest()


class FilterModule:

    def filters(self):
        return {
            "restricted_pod_security_context": restricted_pod_security_context,
            "restricted_container_security_context": restricted_container_security_context,
            "pull_secrets": pull_secrets,
            "selector_labels": selector_labels,
            "labels": labels,
            "config_hash": config_hash,
            "cert_manager_annotations": cert_manager_annotations,
        }
