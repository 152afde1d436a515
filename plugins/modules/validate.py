#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: validate
short_description: Validate the whole Matrix stack's input in one pass
version_added: 0.1.0
description:
  - Checks every variable of the enabled roles of C(matrix.stack) before anything is rendered or applied, and
    reports B(all) problems at once, each naming the variable, what is wrong with its value and what is allowed.
  - Types, choices, list elements and required values come from the roles' argument specs
    (C(roles/<role>/meta/argument_specs.yml)); formats (host names, URLs, CIDRs, durations, sizes, quantities,
    versions, labels), ranges (ports, counts, replicas) and cross-setting rules (registration, TURN, NetworkPolicy
    egress for every external dependency, ingress body size) are checked by the collection's rules.
  - Role defaults are read from the roles and have the lowest precedence, as in a play; each variable is templated
    on its own, so one broken expression does not hide the other problems.
  - The first task of C(playbooks/site.yml) (a pre-task), so it runs before any role's own argument spec check, which
    would stop at the first bad variable of that role.
author:
  - matrix.stack contributors (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: Reads variables only.
  diff_mode:
    support: none
    description: Nothing to change.
  platform:
    support: full
    platforms: all
    description: Runs on the controller.
options: {}
notes:
  - Action plugin only; runs on the controller and never contacts the cluster.
"""

EXAMPLES = r"""
- name: Validate the stack's input before anything is applied
  matrix.stack.validate:
"""

RETURN = r"""
problems:
  description: "Every problem found, one message each: C(<variable>: <problem>; allowed: <what>). Empty when valid."
  returned: always
  type: list
  elements: str
  sample:
    - "synapse_metrics_port: is 8008, the port of the client/federation listener; allowed: any other port from 1 to 65535"
"""
