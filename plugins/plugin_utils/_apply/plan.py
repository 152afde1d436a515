# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Planning of the one apply step (pure: no I/O, unit tested).

The roles hand over a list of components, each ``{name, manifests, wait, secrets, secret_refs}``. From it and
from what the API server reports, these functions decide what to apply (in which order), what changed, which
workloads to wait for, what to prune, what to show as a diff (never a secret value) and what render mode writes.
"""

import copy
import hashlib
import json

# Kinds the collection may produce that pruning looks at (listed by label selector). PersistentVolumeClaims and
# Secrets are never pruned (data, signing key, passwords); Namespaces neither.
PRUNABLE_KINDS = (
    ("networking.k8s.io/v1", "Ingress"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("batch/v1", "CronJob"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "ServiceAccount"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
)
NEVER_PRUNED = frozenset({"PersistentVolumeClaim", "Secret", "Namespace"})
# Labels every object of an instance carries (set by the roles through the matrix.stack.labels filter).
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "matrix.stack"
PART_OF_LABEL = "app.kubernetes.io/part-of"
PART_OF_VALUE = "matrix-stack"
# Workload kinds the step knows how to wait for.
WAITABLE = ("Deployment", "StatefulSet")
# Metadata the server owns: left out of diffs and of the comparison of dry-run results.
SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "selfLink", "generation")
REDACTED = "<redacted>"


class PlanError(ValueError):
    """The handed-over list is malformed (a bug in a role, reported before anything is applied)."""


def group_of(api_version):
    """``apps`` for ``apps/v1``, ``""`` for ``v1``."""
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def key(obj):
    """Identity of an object inside one namespace: (group, kind, name)."""
    return (group_of(obj["apiVersion"]), obj["kind"], obj["metadata"]["name"])


def label(obj):
    return "%s/%s" % (obj["kind"], obj["metadata"]["name"])


def flatten(components):
    """``[(component, manifest)]`` in hand-over order; checks every manifest and refuses duplicates."""
    seen = {}
    out = []
    for component in components:
        name = component.get("name")
        for index, obj in enumerate(component.get("manifests") or []):
            where = "%s manifest #%d" % (name, index + 1)
            if not isinstance(obj, dict):
                raise PlanError("%s is not a mapping" % where)
            for field in ("apiVersion", "kind"):
                if not isinstance(obj.get(field), str) or not obj[field]:
                    raise PlanError("%s has no %s" % (where, field))
            if not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
                raise PlanError("%s (%s) has no metadata.name" % (where, obj["kind"]))
            ident = key(obj)
            if ident in seen:
                raise PlanError("%s is rendered twice (by %s and %s)" % (label(obj), seen[ident], name))
            seen[ident] = name
            out.append((name, obj))
    return out


def split_namespaces(entries):
    """(Namespace objects, the rest): Namespaces are applied first, alone."""
    first = [entry for entry in entries if entry[1]["kind"] == "Namespace"]
    rest = [entry for entry in entries if entry[1]["kind"] != "Namespace"]
    return first, rest


def _instance_labels(instance, part_of=True):
    labels = {INSTANCE_LABEL: instance, MANAGED_BY_LABEL: MANAGED_BY_VALUE}
    if part_of:
        labels[PART_OF_LABEL] = PART_OF_VALUE
    return labels


def _selector(labels, *more):
    """A label selector requiring ``labels`` (a dict) and the ``name=value`` terms ``more``."""
    return ",".join(["%s=%s" % item for item in labels.items()] + list(more))


def instance_selector(instance):
    """The label selector of this instance's objects."""
    return _selector(_instance_labels(instance))


def instance_objects(objects, instance):
    """The objects that carry this instance's labels (those instance_selector selects)."""
    want = _instance_labels(instance)
    return [obj for obj in objects
            if all(((obj.get("metadata") or {}).get("labels") or {}).get(name) == value for name, value in want.items())]


def removal_selectors(instance, purge, generated_secret_label):
    """[(apiVersion, kind, label selector)] of what uninstalling the instance deletes.

    Every prunable kind labelled with the instance and managed by matrix.stack (whoever applied it); with ``purge``
    also the instance's PersistentVolumeClaims (the StatefulSet's claims carry only the instance label) and the
    Secrets the collection generated, those with ``generated_secret_label`` (``name=value``; operator-supplied
    Secrets never carry it).
    """
    managed = _selector(_instance_labels(instance, part_of=False))
    out = [(api_version, kind, managed) for api_version, kind in PRUNABLE_KINDS]
    if purge:
        out.append(("v1", "PersistentVolumeClaim", _selector({INSTANCE_LABEL: instance})))
        out.append(("v1", "Secret", _selector({INSTANCE_LABEL: instance}, generated_secret_label)))
    return out


def prunable_kinds(entries):
    """The (apiVersion, kind) pairs pruning lists: the known ones plus any other kind handed over."""
    kinds = list(PRUNABLE_KINDS)
    known = {kind for _api, kind in kinds}
    for _component, obj in entries:
        if obj["kind"] not in known and obj["kind"] not in NEVER_PRUNED:
            kinds.append((obj["apiVersion"], obj["kind"]))
            known.add(obj["kind"])
    return kinds


def managed_by(obj, field_manager):
    """Whether ``field_manager`` owns fields of ``obj`` through server-side apply."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == field_manager and entry.get("operation") == "Apply":
            return True
    return False


def plan_prune(existing, entries, field_manager):
    """Objects to delete: listed by this instance's labels, applied by our field manager, no longer rendered.

    ``existing`` is every object the label-selected LISTs returned. PVCs, Secrets and Namespaces are never
    returned (whatever the list holds). Sorted by kind and name, for a stable report.
    """
    wanted = {key(obj) for _component, obj in entries}
    out = []
    for obj in existing:
        if obj.get("kind") in NEVER_PRUNED or key(obj) in wanted:
            continue
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            continue
        if not managed_by(obj, field_manager):
            continue
        out.append(obj)
    return sorted(out, key=lambda obj: (obj["kind"], obj["metadata"]["name"]))


def comparable(obj):
    """``obj`` without status and the metadata the server maintains (for diffs and dry-run comparisons)."""
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    out.pop("status", None)
    metadata = out.get("metadata") or {}
    for field in SERVER_METADATA:
        metadata.pop(field, None)
    annotations = metadata.get("annotations")
    if annotations is not None:
        annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
        if not annotations:
            metadata.pop("annotations")
    return out


APPLIED_ANNOTATION = "matrix.stack/applied"


def applied_hash(obj):
    """sha256 of an object as the inventory renders it (canonical JSON, without the annotation that carries it)."""
    plain = copy.deepcopy(obj)
    metadata = plain.get("metadata") or {}
    (metadata.get("annotations") or {}).pop(APPLIED_ANNOTATION, None)
    if "annotations" in metadata and not metadata["annotations"]:
        del metadata["annotations"]  # no annotation and an empty map are the same rendering
    return hashlib.sha256(json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def stamp(obj):
    """A copy of ``obj`` that carries its own hash: the next run can tell that it is unchanged without applying it."""
    out = copy.deepcopy(obj)
    out.setdefault("metadata", {}).setdefault("annotations", {})[APPLIED_ANNOTATION] = applied_hash(obj)
    return out


def contains(live, desired):
    """Whether every field of ``desired`` holds the same value in ``live`` (lists: same length, item by item)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(name in live and contains(live[name], value) for name, value in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(map(contains, live, desired))
    if isinstance(desired, bool) or isinstance(live, bool):
        return type(live) is type(desired) and live == desired  # pylint: disable=unidiomatic-typecheck
    return live == desired


def in_sync(stamped, live):
    """Whether applying ``stamped`` (see stamp) could not change ``live``, so that the apply can be skipped.

    Both must hold: the live object carries the hash of exactly this rendering (a field applied before and no longer
    rendered would otherwise stay: server-side apply removes it, a comparison cannot see it), and every rendered
    field still holds its value (nothing drifted). Anything else, including values the API server normalises, is
    applied: a needless apply only costs a request.
    """
    if live is None:
        return False
    want = stamped["metadata"]["annotations"][APPLIED_ANNOTATION]
    if ((live.get("metadata") or {}).get("annotations") or {}).get(APPLIED_ANNOTATION) != want:
        return False
    return contains(live, stamped)


def changed(before, after, dry_run):
    """Whether applying changed the server's object.

    A real apply: the object is new or its resourceVersion moved (the API server does not write an identical
    object). A dry run never moves the resourceVersion: compare the content instead.
    """
    if before is None:
        return True
    if not dry_run:
        return before["metadata"].get("resourceVersion") != after["metadata"].get("resourceVersion")
    return comparable(before) != comparable(after)


def spec_changed(before, after):
    """Whether a workload's spec changed (new object or new generation): a rollout follows."""
    if before is None:
        return True
    return before["metadata"].get("generation") != after["metadata"].get("generation")


def ready(obj):
    """Whether a Deployment or StatefulSet has rolled out completely (kubernetes.core's conditions)."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    replicas = spec.get("replicas", 1)
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    if obj["kind"] == "Deployment":
        return ((status.get("replicas") or 0) == replicas and (status.get("updatedReplicas") or 0) == replicas
                and (status.get("availableReplicas") or 0) == replicas and not status.get("unavailableReplicas"))
    if obj["kind"] == "StatefulSet":
        if (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
            return (status.get("replicas") or 0) == replicas
        return ((status.get("readyReplicas") or 0) == replicas and (status.get("updatedReplicas") or 0) == replicas
                and (status.get("replicas") or 0) == replicas
                and status.get("updateRevision") == status.get("currentRevision"))
    return True


def wait_list(components):
    """``{(kind, name)}`` of the workloads the roles asked to wait for."""
    out = set()
    for component in components:
        for item in component.get("wait") or []:
            if item.get("kind") not in WAITABLE:
                raise PlanError("%s: cannot wait for kind %r (allowed: %s)"
                                % (component.get("name"), item.get("kind"), ", ".join(WAITABLE)))
            out.add((item["kind"], item["name"]))
    return out


def plan_waits(requested, outcomes):
    """The workloads to wait for: asked for by a role, and whose spec changed or that are not ready yet.

    ``outcomes`` maps (kind, name) to ``(before, after)`` as applied. Sorted for a stable report.
    """
    out = []
    for kind, name in sorted(requested):
        if (kind, name) not in outcomes:
            continue
        before, after = outcomes[(kind, name)]
        if spec_changed(before, after) or not ready(after):
            out.append((kind, name))
    return out


def redact(obj):
    """A copy of ``obj`` without secret values (Secret data/stringData keys kept, values replaced)."""
    if obj is None or obj.get("kind") != "Secret":
        return obj
    out = copy.deepcopy(obj)
    for field in ("data", "stringData"):
        if isinstance(out.get(field), dict):
            out[field] = {name: REDACTED for name in out[field]}
    return out


def object_diff(before, after, gone="pruned"):
    """One entry of Ansible's diff list for an object (server-maintained fields and secret values left out);
    ``gone`` names why an object with no ``after`` goes."""
    return {
        "before": _yaml(comparable(redact(before))) if before is not None else "",
        "after": _yaml(comparable(redact(after))) if after is not None else "",
        "before_header": label(after if after is not None else before) + (" (absent)" if before is None else ""),
        "after_header": label(after if after is not None else before) + (" (%s)" % gone if after is None else ""),
    }


def _safe_dump(obj, **options):
    import yaml  # pylint: disable=import-outside-toplevel  # controller side only; keeps the module importable
    from ansible_collections.matrix.stack.plugins.plugin_utils._yaml import SafeDumper  # pylint: disable=import-outside-toplevel
    return yaml.dump(obj, Dumper=SafeDumper, default_flow_style=False, width=1000, **options)


def _yaml(obj):
    return _safe_dump(obj, sort_keys=True)


# ----- render mode -------------------------------------------------------------------------------

def render_files(entries, order):
    """``{relative path: text}``: one YAML file per object under ``<NN>-<component>/``, as kubectl -R reads them.

    The objects are exactly those apply mode applies (stamped with their hash), so that applying the files with the
    same field manager and then running site.yml changes nothing, and the other way round.
    """
    files = {}
    for component, obj in entries:
        if component not in order:
            raise PlanError("component %r has no render order (known: %s)" % (component, ", ".join(sorted(order))))
        path = "%s-%s/%s-%s.yaml" % (order[component], component, obj["kind"].lower(), obj["metadata"]["name"])
        files[path] = "---\n" + _dump(stamp(obj))
    return files


def _dump(obj):
    return _safe_dump(obj, sort_keys=False, indent=2, allow_unicode=True)


def render_dirs(order):
    """Names of the directories render mode owns (and removes before writing): ``NN-component``."""
    return {"%s-%s" % (number, component) for component, number in order.items()}


def secrets_markdown(namespace, components):
    """SECRETS.md: the Secrets the rendered stack needs (names and keys, never values)."""
    lines = [
        "# Secrets needed by the rendered manifests",
        "",
        "Render mode never writes secret values. Create these Secrets in namespace",
        "`%s` before applying the manifests, either by running the" % namespace,
        "same playbook once without `matrix_stack_render_dir` (the matrix.stack.matrix_secret",
        "module generates only missing keys and never changes existing ones), or with your own",
        "secret tooling (sealed-secrets, external-secrets, SOPS ...) using exactly these names and keys.",
        "",
    ]
    for component in components:
        for secret in component.get("secrets") or []:
            lines += ["## Secret `%s` (%s)" % (secret["name"], component["name"]), "",
                      " ".join(str(secret.get("description", "")).split()), "",
                      "| key | content |", "|-----|---------|"]
            for item in secret.get("keys_") or []:
                length = (", %s characters" % item["length"]) if item.get("length") is not None else ""
                lines.append("| `%s` | %s%s |" % (item["name"], item.get("type", ""), length))
            lines.append("")
    for component in components:
        refs = component.get("secret_refs") or []
        if refs:
            lines += ["## Operator-supplied Secrets (%s)" % component["name"], "",
                      "| Secret | key | set by |", "|--------|-----|--------|"]
            lines += ["| `%s` | `%s` | `%s` |" % (ref["name"], ref["key"], ref["variable"]) for ref in refs]
            lines.append("")
    return "\n".join(lines)


def missing_refs(refs, secrets):
    """The operator-supplied references ({variable, name, key}) whose Secret or key does not exist.

    ``secrets`` maps a Secret name to its dict from the API (None when absent).
    """
    out = []
    for ref in refs:
        secret = secrets.get(ref["name"])
        if secret is None or ref["key"] not in ((secret.get("data") or {})):
            out.append(ref)
    return out


def summary(outcomes, dry_run):
    """{"created": [...], "updated": [...], "unchanged": n} from ``{label: (before, after)}``."""
    created = sorted(name for name, (before, _after) in outcomes.items() if before is None)
    updated = sorted(name for name, (before, after) in outcomes.items()
                     if before is not None and changed(before, after, dry_run))
    return {"created": created, "updated": updated, "unchanged": len(outcomes) - len(created) - len(updated)}
