# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of matrix.stack.validate: the one validation pass of the stack's input, on the controller."""

import os

from ansible.plugins.action import ActionBase

from ansible_collections.matrix.stack.plugins.plugin_utils._validate import collect, engine

COLLECTION = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir)
ROLES_DIR = os.path.join(COLLECTION, "roles")
PLAYBOOKS_DIR = os.path.join(COLLECTION, "playbooks")


def _playbook_text():
    text = []
    for root, _dirs, files in sorted(os.walk(PLAYBOOKS_DIR)):
        for name in sorted(files):
            if name.endswith((".yml", ".yaml")):
                with open(os.path.join(root, name), encoding="utf-8") as handle:
                    text.append(handle.read())
    return "\n".join(text)


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        options = engine.load_role_options(ROLES_DIR)
        names = {name for role in options.values() for name in role}
        defaults = collect.role_defaults(self._loader, ROLES_DIR, options)
        variables = dict(defaults)
        variables.update(task_vars or {})
        values, errors = collect.template_values(self._templar, variables, names)
        problems = engine.validate(values, options, errors, collect.derived_defaults(defaults, variables, names))
        typos = collect.likely_typos(task_vars or {}, names, _playbook_text())
        if typos:
            result["warnings"] = [f"{name} is not a variable of matrix.stack (ignored): did you mean {known}?" for name, known in typos.items()]
        result["changed"] = False
        result["problems"] = problems
        if problems:
            result["failed"] = True
            result["msg"] = (f"{len(problems)} invalid setting(s), nothing was applied:\n"
                             + "\n".join(f"- {problem}" for problem in problems))
        else:
            result["msg"] = f"{len(values)} settings of {len(options)} roles are valid"
        return result
