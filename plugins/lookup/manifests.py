# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lookup plugin matrix.stack.manifests: a role's object templates rendered into Kubernetes objects."""

DOCUMENTATION = r"""
name: manifests
author:
  - matrix.stack contributors (!UNKNOWN)
short_description: Render a role's Kubernetes object templates into objects
version_added: 0.1.0
description:
  - Renders each template, found like M(ansible.builtin.template) finds it (the calling role's C(templates/)
    directory first), with the task's variables, and parses the result as YAML.
  - Returns the objects in the order of the templates. A template may render zero, one or several YAML documents;
    empty documents are dropped, so an object that is switched off renders as an empty template.
  - Unlike the P(ansible.builtin.template#lookup) lookup it does not deep-copy every variable for each template
    (a shallow view is enough, a template cannot change variables). That copy was most of the time the stack
    spent rendering.
  - Strings in the objects are plain data and never templated again, since Synapse's configuration may contain C({{).
  - The compiled templates are kept between runs in Jinja's bytecode cache (a private per-user directory; a changed
    template, ansible-core, Jinja or Python compiles anew). Set the environment variable
    E(MATRIX_STACK_TEMPLATE_CACHE) to another directory, or to V(off) to compile every time.
options:
  _terms:
    description: Template file names.
    required: true
    type: list
    elements: str
  format:
    description:
      - C(objects) parses each rendered template as YAML and returns its documents.
      - C(text) returns each rendered template as a string (e.g. a configuration file a ConfigMap embeds).
    type: str
    default: objects
    choices: [objects, text]
"""

EXAMPLES = r"""
- name: Hand the objects of a role to the apply step
  ansible.builtin.set_fact:
    objects: "{{ query('matrix.stack.manifests', 'serviceaccount.yaml.j2', 'deployment.yaml.j2') }}"
"""

RETURN = r"""
_list:
  description: The objects (format C(objects)) or the rendered texts (format C(text)).
  type: list
  elements: raw
"""

import os

import yaml

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

from ansible_collections.matrix.stack.plugins.plugin_utils._template_cache import compiled_once
from ansible_collections.matrix.stack.plugins.plugin_utils._yaml import SafeLoader

try:  # ansible-core >= 2.19: template source must be marked trusted
    from ansible.template import trust_as_template
except ImportError:  # pragma: no cover - older ansible-core templates every string
    def trust_as_template(value):
        return value


def search_path(variables, template_path):
    """Jinja's include path: the template's directory, then each search path's templates/ and itself."""
    paths = [os.path.dirname(template_path)]
    for path in variables.get("ansible_search_path", []):
        paths.extend([os.path.join(path, "templates"), path])
    return paths


def documents(text, name):
    """The non-empty YAML documents of a rendered template, as plain data."""
    try:
        return [doc for doc in yaml.load_all(text, Loader=SafeLoader) if doc is not None]
    except yaml.YAMLError as exc:
        raise AnsibleError("matrix.stack.manifests: %s does not render valid YAML: %s" % (name, exc)) from None


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        text_only = self.get_option("format") == "text"
        variables = variables or {}
        results = []
        for term in terms:
            path = self.find_file_in_search_path(variables, "templates", term)
            if not path:
                raise AnsibleError("matrix.stack.manifests: template %s not found" % term)
            with open(path, encoding="utf-8") as handle:
                source = handle.read()
            templar = self._templar.copy_with_new_env(searchpath=search_path(variables, path))
            # A shallow copy: the variables of the task, plus the path of this template.
            templar.available_variables = dict(variables, template_path=path)
            with compiled_once(templar, source, path):
                rendered = templar.template(trust_as_template(source), escape_backslashes=False)
            if text_only:
                results.append(rendered)
            else:
                results.extend(documents(rendered, term))
        return results
