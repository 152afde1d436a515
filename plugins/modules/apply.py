#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: apply
short_description: Apply (or render) the whole Matrix stack in one step
version_added: 0.1.0
description:
  - The roles of C(matrix.stack) only render their objects, the Secrets they need and the workloads to wait for into
    one list; this step applies that list with one Kubernetes client. It is the last task of C(playbooks/site.yml).
  - Order. The Namespace first, alone. Then the operator-supplied Secrets are checked (every missing one is named
    with its variable, before anything else is applied) and the generated Secrets get their missing keys
    (CSPRNG values, existing keys never changed, as M(matrix.stack.matrix_secret) does). Then every other object is
    applied with server-side apply, the stable field manager O(field_manager) and bounded concurrency
    (O(concurrency)).
  - C(changed) is true only when the server's object changed (its resourceVersion moved; in check mode, the dry-run
    result differs from the stored object). A second run with the same input reports no change.
  - Pruning. Objects of this instance (labels C(app.kubernetes.io/instance=<instance>),
    C(app.kubernetes.io/managed-by=matrix.stack), C(app.kubernetes.io/part-of=matrix-stack)) that were applied
    by O(field_manager) and are no longer in the list are deleted, for example Element's objects after
    C(matrix_stack_element_enabled=false). PersistentVolumeClaims, Secrets and Namespaces are never pruned. What
    is pruned is printed and returned in RV(pruned).
  - Waiting. Only for the workloads a role asked for whose spec changed (or that are not ready), all at once, with
    one watch per kind.
  - Check mode. Server-side dry run (C(dryRun=All)) of every write; nothing changes. With C(--diff) every object
    that would change is shown (server-maintained fields left out), Secrets by key names only, and what would be
    pruned.
  - Uninstall (O(state=absent), C(playbooks/uninstall.yml)). Deletes every object of the prunable kinds labelled
    C(app.kubernetes.io/instance=<instance>) and C(app.kubernetes.io/managed-by=matrix.stack), whoever applied it,
    all at once, then waits until they are gone. PersistentVolumeClaims and Secrets are kept unless O(purge) is
    set; O(components) is ignored. Check mode deletes nothing and reports (and with C(--diff) shows) what would go.
  - Render mode (O(render_dir) set). No cluster is contacted; one file per object under
    C(<render_dir>/<NN>-<component>/<kind>-<name>.yaml) and C(SECRETS.md) listing the Secrets (names and keys,
    never values), written in one go; only the C(<NN>-<component>) directories of the collection are replaced.
author:
  - matrix.stack contributors (!UNKNOWN)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    description: Server-side dry run of every write; render mode writes nothing.
  diff_mode:
    support: full
    description: Objects as stored and as they would be after the apply; Secrets by key names only.
  platform:
    support: full
    platforms: all
    description: Runs on the controller.
options:
  components:
    description:
      - What the roles handed over, one entry per call of the role plumbing.
      - Each entry has C(name) (the component, for example V(synapse)) and any of C(manifests) (objects),
        C(wait) (list of C({kind, name}), Deployment or StatefulSet), C(secrets) (generated Secrets,
        C({name, app, description, keys_})), C(secret_refs) (operator-supplied Secrets that must exist,
        C({variable, name, key})) and C(secret_labels) (labels of the generated Secrets).
      - Ignored with O(state=absent).
    type: list
    elements: dict
    default: []
  state:
    description:
      - V(present) applies the list; V(absent) removes the instance (see the description).
    type: str
    choices: [present, absent]
    default: present
  namespace:
    description: Namespace of the stack (required in apply mode).
    type: str
  instance:
    description: Instance name, value of the C(app.kubernetes.io/instance) label pruning selects on.
    type: str
  field_manager:
    description: Server-side apply field manager. Keep it stable; pruning only deletes objects it applied.
    type: str
  render_dir:
    description: When set, write the manifests to this directory instead of applying them.
    type: str
  render_order:
    description: Component name to the two-digit prefix of its render directory.
    type: dict
  wait:
    description: Wait for the workloads whose spec changed.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for all of them.
    type: int
    default: 600
  prune:
    description: Delete the objects of this instance that are no longer in the list.
    type: bool
    default: true
  purge:
    description:
      - With O(state=absent), also delete the instance's PersistentVolumeClaims (database, media) and the Secrets the
        collection generated (signing key, passwords). Irreversible; operator-supplied Secrets are never deleted.
    type: bool
    default: false
  purge_namespace:
    description: With O(purge), also delete the namespace (when the stack created it).
    type: bool
    default: false
  concurrency:
    description: How many objects are applied, listed or deleted at the same time.
    type: int
    default: 8
  optional_kinds:
    description: Kinds left out (and reported in RV(left_out)) when the API server does not serve them.
    type: list
    elements: str
    default: []
notes:
  - Action plugin only; runs on the controller.
"""

EXAMPLES = r"""
- name: Apply the whole stack in one step
  matrix.stack.apply:
    components: "{{ __matrix_stack_components }}"
    namespace: matrix
    instance: matrix
    field_manager: matrix.stack
"""

RETURN = r"""
created:
  description: Objects created (C(Kind/name)).
  returned: apply mode
  type: list
  elements: str
updated:
  description: Objects the apply changed.
  returned: apply mode
  type: list
  elements: str
unchanged:
  description: How many objects were already as rendered.
  returned: apply mode
  type: int
pruned:
  description: Objects deleted (in check mode, that would be deleted) because the inventory no longer renders them.
  returned: apply mode
  type: list
  elements: str
  sample: [Deployment/matrix-element, ConfigMap/matrix-element]
left_out:
  description: Objects of O(optional_kinds) left out because the API server does not serve their kind.
  returned: apply mode
  type: list
  elements: str
secrets:
  description: The generated Secrets, with the key names generated and kept (never values).
  returned: apply mode
  type: list
  elements: dict
removed:
  description: Objects deleted (in check mode, that would be deleted) by O(state=absent) (C(Kind/name)).
  returned: state absent
  type: list
  elements: str
  sample: [Deployment/matrix-synapse, Namespace/matrix]
waited:
  description: Workloads waited for.
  returned: apply mode
  type: list
  elements: str
files:
  description: Number of manifests written.
  returned: render mode
  type: int
"""
