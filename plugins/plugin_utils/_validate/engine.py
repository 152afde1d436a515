# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One validation pass over the whole stack: types from the argument specs, then each role's rules, then the
cross-role rules. Returns every problem at once.

To add a variable: declare it in the role's ``meta/argument_specs.yml`` (type, choices, elements) and, when
its format, range or relation to other settings matters, add a line to the role's module here
(``synapse.py``, ``postgres.py`` ...), using the checkers of ``checks.py`` and ``kube.py``.
"""

import os

import yaml

from ansible_collections.matrix.stack.plugins.plugin_utils._validate import (
    backup, coturn, egress, element, networkpolicy, postgres, stack, synapse)
from ansible_collections.matrix.stack.plugins.plugin_utils._validate.report import Report
from ansible_collections.matrix.stack.plugins.plugin_utils._validate.specs import check_types, role_options
from ansible_collections.matrix.stack.plugins.plugin_utils._yaml import SafeLoader

# Roles in the order site.yml runs them, with their rules.
ROLE_RULES = {
    "matrix_stack": stack.rules,
    "synapse": synapse.rules,
    "postgres": postgres.rules,
    "coturn": coturn.rules,
    "element": element.rules,
    "networkpolicy": networkpolicy.rules,
    "backup": backup.rules,
}
# Rules that span roles, run when the roles they concern are enabled.
CROSS_RULES = {
    "networkpolicy": [egress.rules, egress.internet_only_features],
}
# Whether a role is deployed, given the converted values.
ENABLED = {
    "coturn": lambda values: values.get("matrix_stack_coturn_enabled", True),
    "element": lambda values: values.get("matrix_stack_element_enabled", True),
    "networkpolicy": lambda values: values.get("matrix_stack_networkpolicy_enabled", True),
    "backup": lambda values: values.get("backup_schedule_enabled", False),
}


def load_role_options(roles_dir):
    """{role: options} from every roles/<role>/meta/argument_specs.yml."""
    options = {}
    for role in ROLE_RULES:
        path = os.path.join(roles_dir, role, "meta", "argument_specs.yml")
        with open(path, encoding="utf-8") as handle:
            options[role] = role_options(yaml.load(handle, Loader=SafeLoader))
    return options


def validate(raw, options, template_errors=None, derived=None):
    """Every problem of the input ``raw`` ({variable: templated value}) as a list of messages.

    ``options`` is ``load_role_options()``'s result; ``template_errors`` maps variables whose value could not
    be templated to the error; ``derived`` (``collect.derived_defaults()``) lets a problem that only follows
    from another variable's problem go unreported.
    """
    template_errors = template_errors or {}
    report = Report({}, failed=template_errors)
    missing_required = {name for role in options.values() for name, option in role.items()
                        if option.get("required") and name not in raw}
    for name, message in template_errors.items():
        if not any(f"'{missing}'" in message for missing in missing_required):
            report.error(name, f"cannot be computed: {message}")
    usable = {name: value for name, value in raw.items() if name not in template_errors}
    check_types(report, options["matrix_stack"], usable)
    check_types(report, {"backup_schedule_enabled": options["backup"]["backup_schedule_enabled"]}, usable)
    roles = [role for role in ROLE_RULES if role not in ENABLED or ENABLED[role](report.values)]
    for role in roles[1:]:
        check_types(report, options[role], usable)
    for role in roles:
        ROLE_RULES[role](report)
    for role in roles:
        for rule in CROSS_RULES.get(role, ()):
            rule(report)
    return report.without_consequences(derived or {})
