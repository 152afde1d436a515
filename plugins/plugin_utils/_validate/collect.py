# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Gather the values to validate: the roles' defaults under the play's variables, each templated on its own."""

import difflib
import os
import re

from ansible.errors import AnsibleError


def role_defaults(loader, roles_dir, roles):
    """The merged ``defaults/main.yml`` of the roles (as Ansible loads them: templates trusted)."""
    merged = {}
    for role in roles:
        path = os.path.join(roles_dir, role, "defaults", "main.yml")
        if os.path.exists(path):
            merged.update(loader.load_from_file(path, trusted_as_template=True) or {})
    return merged


def template_values(templar, variables, names):
    """Template every variable of ``names`` that is set. Returns (values, errors), errors as {name: message}.

    One variable that cannot be templated (an undefined reference, a Jinja error) does not hide the others.
    """
    templar = templar.copy_with_new_env(available_variables=variables)
    values, errors = {}, {}
    for name in sorted(names):
        if name not in variables:
            continue
        try:
            values[name] = templar.template(variables[name])
        except AnsibleError as exc:
            errors[name] = str(getattr(exc, "message", exc)).splitlines()[0]
    return values, errors


def derived_defaults(defaults, variables, names):
    """{variable: names its default refers to} for the variables left at a templated role default."""
    derived = {}
    for name in names:
        if name in defaults and variables.get(name) is defaults[name]:
            text = repr(defaults[name])
            if "{{" in text or "{%" in text:
                derived[name] = set(re.findall(r"[a-z_][a-z0-9_]*", text)) & set(names) - {name}
    return derived


PREFIXES = ("matrix_stack_", "synapse_", "postgres_", "coturn_", "element_", "networkpolicy_", "backup_")


def likely_typos(set_names, known, playbook_text=""):
    """{set name: known name it most likely misspells}: set variables with a role prefix that no role declares.

    Names used by the playbooks themselves (``playbook_text``) are not typos. Only names close to a declared one
    are returned: a variable of the operator's own with a role prefix is left alone.
    """
    found = {}
    for name in sorted(set_names):
        if name.startswith(PREFIXES) and name not in known and not re.search(rf"\b{re.escape(name)}\b", playbook_text):
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
            if close:
                found[name] = close[0]
    return found
