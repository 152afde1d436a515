# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of matrix.stack.apply: the one step that applies (or renders) the whole stack, on the controller."""

import json
import os
import shutil

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC

from ansible_collections.matrix.stack.plugins.plugin_utils._apply import plan

display = Display()

# kubernetes.core's connection options (names and aliases, K8S_AUTH_* variables, impersonation), handed to its
# get_api_client.
AUTH_OPTIONS = tuple(name for option, spec in AUTH_ARG_SPEC.items() for name in [option] + list(spec.get("aliases") or []))
OPTIONS = ("components", "state", "namespace", "instance", "field_manager", "render_dir", "render_order", "wait",
           "wait_timeout", "prune", "purge", "purge_namespace", "concurrency", "optional_kinds") + AUTH_OPTIONS


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        unknown = sorted(set(args) - set(OPTIONS))
        if unknown:
            raise AnsibleActionFail("unsupported option(s): %s (allowed: %s)" % (", ".join(unknown), ", ".join(OPTIONS)))
        state = args.get("state") or "present"
        if state not in ("present", "absent"):
            raise AnsibleActionFail("matrix.stack.apply: state must be present or absent, got %r" % state)
        if state == "absent":
            for required in ("namespace", "instance"):
                if not args.get(required):
                    raise AnsibleActionFail("matrix.stack.apply: option %s is required with state absent" % required)
            from ansible_collections.matrix.stack.plugins.plugin_utils._apply.step import uninstall_stack  # pylint: disable=import-outside-toplevel
            result.update(uninstall_stack(args, AUTH_OPTIONS, bool(self._task.check_mode), bool(self._task.diff)))
            return result
        # Plain data (Ansible's tagged strings and lazy containers become str/list/dict), and a private copy.
        components = json.loads(json.dumps(args.get("components") or []))
        try:
            entries = plan.flatten(components)
        except plan.PlanError as exc:
            raise AnsibleActionFail("matrix.stack.apply: %s" % exc) from None
        check = bool(self._task.check_mode)
        want_diff = bool(self._task.diff)
        if args.get("render_dir"):
            result.update(render(str(args["render_dir"]), args.get("namespace") or "", components, entries,
                                 dict(args.get("render_order") or {}), check))
            return result
        for required in ("namespace", "instance", "field_manager"):
            if not args.get(required):
                raise AnsibleActionFail("matrix.stack.apply: option %s is required in apply mode" % required)
        # Imported here: render mode never loads the Kubernetes client.
        from ansible_collections.matrix.stack.plugins.plugin_utils._apply.step import apply_stack  # pylint: disable=import-outside-toplevel
        result.update(apply_stack(args, AUTH_OPTIONS, components, entries, check, want_diff))
        return result


def render(render_dir, namespace, components, entries, order, check):
    """Render mode: the same list, written in one go (one file per object); only directories it owns are removed."""
    try:
        files = plan.render_files(entries, order)
    except plan.PlanError as exc:
        raise AnsibleActionFail("matrix.stack.apply: %s" % exc) from None
    files["SECRETS.md"] = plan.secrets_markdown(namespace, components)
    owned = plan.render_dirs(order)
    old = {}
    if os.path.isdir(render_dir):
        for directory in sorted(os.listdir(render_dir)):
            if directory in owned and os.path.isdir(os.path.join(render_dir, directory)):
                for name in os.listdir(os.path.join(render_dir, directory)):
                    with open(os.path.join(render_dir, directory, name), encoding="utf-8") as handle:
                        old["%s/%s" % (directory, name)] = handle.read()
        secrets_md = os.path.join(render_dir, "SECRETS.md")
        if os.path.exists(secrets_md):
            with open(secrets_md, encoding="utf-8") as handle:
                old["SECRETS.md"] = handle.read()
    changed = old != files
    if changed and not check:
        os.makedirs(render_dir, exist_ok=True)
        for directory in os.listdir(render_dir):
            if directory in owned and os.path.isdir(os.path.join(render_dir, directory)):
                shutil.rmtree(os.path.join(render_dir, directory))
        for path, text in files.items():
            target = os.path.join(render_dir, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w", encoding="utf-8") as handle:
                handle.write(text)
    return {"changed": changed, "files": len(files) - 1, "render_dir": render_dir,
            "msg": "%d manifests %s %s" % (len(files) - 1, "would be written to" if check else "written to", render_dir)}
