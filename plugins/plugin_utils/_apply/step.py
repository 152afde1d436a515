# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply mode of matrix.stack.apply: one Kubernetes client applies, prunes and waits (imported only in apply mode,
so that render mode never loads the Kubernetes client)."""

import time
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.common.validation import check_type_bool, check_type_int
from ansible.utils.display import Display

from ansible_collections.matrix.stack.plugins.module_utils.kube.errors import KubeError, KubeNamespaceNotFoundError
from ansible_collections.matrix.stack.plugins.module_utils.secrets.planning import OWNED_LABEL, OWNED_VALUE
from ansible_collections.matrix.stack.plugins.plugin_utils._apply import plan
from ansible_collections.matrix.stack.plugins.plugin_utils._apply import secrets as secret_step
from ansible_collections.matrix.stack.plugins.plugin_utils._apply.kube import Kube

display = Display()


def apply_stack(args, auth_options, components, entries, check, want_diff):
    """Result of one apply-mode run; a Kubernetes error becomes a failed result that names its kind and status."""
    return _outcome(Step(args, auth_options, components, entries, check, want_diff), Step.run)


def uninstall_stack(args, auth_options, check, want_diff):
    """Result of one uninstall run (``state: absent``); errors as in apply_stack."""
    return _outcome(Step(args, auth_options, [], [], check, want_diff), Step.uninstall)


def _outcome(step, action):
    try:
        return action(step)
    except KubeError as exc:
        return dict(failed=True, msg=str(exc), kube_error=exc.kind, status=exc.status, changed=step.changed)


class Step:
    """One run of the apply step (apply mode, or uninstall)."""

    def __init__(self, args, auth_options, components, entries, check, want_diff):
        self.args = args
        self.components = components
        self.entries = entries
        self.check = check
        self.want_diff = want_diff
        self.namespace = str(args["namespace"])
        self.field_manager = str(args.get("field_manager") or "matrix.stack")
        self.concurrency = max(1, check_type_int(args.get("concurrency", 8)))
        auth = {name: args[name] for name in auth_options if args.get(name) not in (None, "")}
        self.kube = Kube(auth, self.field_manager, dry_run=check)
        self.changed = False
        self.diffs = []

    def parallel(self, func, items):
        items = list(items)
        if len(items) <= 1:
            return [func(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(func, items))

    def apply_one(self, entry, existing, namespace_exists=True, listed_kinds=frozenset()):
        """(before, after) of one object; ``existing`` holds every object of the ``listed_kinds`` in the namespace."""
        obj = plan.stamp(entry[1])
        before = existing.get(plan.key(obj))
        if before is None and namespace_exists and plan.key(obj)[:2] not in listed_kinds:
            before = self.kube.get(obj, self.namespace)
        if not namespace_exists:
            return before, obj  # check mode, namespace still to be created: a dry run would be refused
        if plan.in_sync(obj, before):
            return before, before  # this rendering was applied and nothing drifted: no request
        return before, self.kube.apply(obj, self.namespace)

    def run(self):
        started = time.monotonic()
        namespaces, rest = plan.split_namespaces(self.entries)
        requested_waits = plan.wait_list(self.components)
        outcomes = {}
        optional = set(self.args.get("optional_kinds") or [])
        skipped = [entry for entry in rest if entry[1]["kind"] in optional
                   and entry[1]["kind"] not in self.kube.resources(entry[1]["apiVersion"])]
        rest = [entry for entry in rest if entry not in skipped]

        # 1. The Namespace, alone and first.
        namespace_exists = True
        for entry in namespaces:
            before, after = self.apply_one(entry, {})
            outcomes[plan.key(entry[1])] = (before, after)
            if entry[1]["metadata"]["name"] == self.namespace and before is None and self.check:
                namespace_exists = False

        # 2. Operator-supplied Secrets must exist (before anything else is applied), generated Secrets are created.
        refs = [ref for component in self.components for ref in component.get("secret_refs") or []]
        generated = [(component, secret) for component in self.components
                     for secret in component.get("secrets") or []]
        secret_results = secret_step.ensure(self.kube, self.namespace, refs, generated, self.parallel,
                                            namespace_exists)

        # 3. What exists now: one LIST per kind of the whole namespace (an object absent from it needs no GET); those
        #    with this instance's labels are the prune candidates.
        instance = str(self.args["instance"])
        selector = plan.instance_selector(instance)
        existing, listed, listed_kinds = {}, [], frozenset()
        if namespace_exists:
            kinds = plan.prunable_kinds(rest) + [("v1", "PersistentVolumeClaim")]
            for items in self.parallel(lambda kind: self.kube.list(kind[0], kind[1], self.namespace, None), kinds):
                listed.extend(items)
            existing = {plan.key(obj): obj for obj in listed}
            listed_kinds = frozenset((plan.group_of(api_version), kind) for api_version, kind in kinds)
            listed = plan.instance_objects(listed, instance)

        # 4. Everything else, server-side applied with bounded concurrency.
        try:
            results = self.parallel(lambda entry: self.apply_one(entry, existing, namespace_exists, listed_kinds), rest)
        except KubeNamespaceNotFoundError as exc:
            raise KubeError("%s (matrix_stack_create_namespace is false: the namespace must exist)" % exc) from None
        for entry, outcome in zip(rest, results):
            outcomes[plan.key(entry[1])] = outcome

        # 5. Prune what this instance applied before and no longer renders.
        pruned = plan.plan_prune(listed, self.entries, self.field_manager) if self.args.get("prune", True) else []
        self.parallel(lambda obj: self.kube.delete(obj, self.namespace), pruned)

        by_label = {plan.label(after): (before, after) for before, after in outcomes.values()}
        report = plan.summary(by_label, self.check)
        self.changed = bool(report["created"] or report["updated"] or pruned or secret_results["changed"])
        if self.want_diff:
            for name in report["created"] + report["updated"]:
                self.diffs.append(plan.object_diff(*by_label[name]))
            self.diffs.extend(secret_results["diffs"])
            self.diffs.extend(plan.object_diff(obj, None) for obj in pruned)
        pruned_labels = [plan.label(obj) for obj in pruned]
        if pruned_labels:
            display.display("%s (%s): %s" % ("would prune" if self.check else "pruned",
                                             "no longer rendered by the inventory", ", ".join(pruned_labels)),
                            color="yellow" if self.check else "blue")

        # 6. Wait, all at once, for the workloads whose spec changed (or that are not ready).
        waits = []
        if check_type_bool(self.args.get("wait", True)) and not self.check:
            by_kind = {(kind, name): outcomes.get(("apps", kind, name)) for kind, name in requested_waits}
            waits = plan.plan_waits(requested_waits, {k: v for k, v in by_kind.items() if v is not None})
            self.wait(waits, selector, check_type_int(self.args.get("wait_timeout", 600)))

        result = {
            "changed": self.changed,
            "created": report["created"],
            "updated": report["updated"],
            "unchanged": report["unchanged"],
            "pruned": pruned_labels,
            "secrets": secret_results["summary"],
            "waited": ["%s/%s" % item for item in waits],
            "left_out": [plan.label(obj) for _component, obj in skipped],
            "seconds": round(time.monotonic() - started, 3),
        }
        result["msg"] = "%d created, %d updated, %d unchanged, %d %s, %d waited for" % (
            len(report["created"]), len(report["updated"]), report["unchanged"], len(pruned_labels),
            "to prune" if self.check else "pruned", len(waits))
        if self.diffs:
            result["diff"] = self.diffs
        return result

    def uninstall(self):
        """Delete the instance's objects (with ``purge``: its PVCs, generated Secrets and namespace), all at once,
        then wait until they are gone."""
        started = time.monotonic()
        purge = check_type_bool(self.args.get("purge", False))
        owned = "%s=%s" % (OWNED_LABEL, OWNED_VALUE)
        selectors = plan.removal_selectors(str(self.args["instance"]), purge, owned)
        found = [obj for items in self.parallel(lambda sel: self.kube.list(sel[0], sel[1], self.namespace, sel[2]),
                                                selectors) for obj in items]
        self.parallel(lambda obj: self.kube.delete(obj, self.namespace), found)
        namespace = None
        if purge and check_type_bool(self.args.get("purge_namespace", False)):
            namespace = self.kube.get({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
                                      self.namespace)
            if namespace is not None:
                self.kube.delete(namespace, self.namespace)
        removed = found + ([namespace] if namespace is not None else [])
        self.changed = bool(removed)
        if check_type_bool(self.args.get("wait", True)) and not self.check and removed:
            timeout = check_type_int(self.args.get("wait_timeout", 600))
            late = self.kube.wait_gone(removed, self.namespace, timeout)
            if late:
                raise KubeError("still present after %ss (matrix_stack_wait_timeout): %s; see kubectl -n %s get "
                                "events" % (timeout, ", ".join(late), self.namespace))
        labels = [plan.label(obj) for obj in removed]
        result = {"changed": self.changed, "removed": labels, "seconds": round(time.monotonic() - started, 3),
                  "msg": "%d %s" % (len(labels), "to remove" if self.check else "removed")}
        if labels:
            display.display("%s: %s" % ("would remove" if self.check else "removed", ", ".join(labels)),
                            color="yellow" if self.check else "blue")
        if self.want_diff and removed:
            result["diff"] = [plan.object_diff(obj, None, gone="removed") for obj in removed]
        return result

    def wait(self, waits, selector, timeout):
        kinds = sorted({kind for kind, _name in waits})

        def one(kind):
            names = [name for k, name in waits if k == kind]
            return self.kube.wait_ready("apps/v1", kind, self.namespace, names, plan.ready, selector, timeout)

        late = [name for names in self.parallel(one, kinds) for name in names]
        if late:
            raise KubeError("not ready after %ss (matrix_stack_wait_timeout): %s; see kubectl -n %s describe and the "
                            "pods' events" % (timeout, ", ".join(late), self.namespace))
