"""Modules run in a process of their own, never in the controller's.

Once a test of this run imports controller code (the validation tests template with ansible-core's Templar),
ansible-core marks the process as the controller and module warnings go to the display instead of into the
module's result. Each module test runs as a module would.
"""

import pytest

from ansible.module_utils import _internal

from ..module_utils._kube_discovery import discovery_cache_in_tmp_path  # noqa: F401  pylint: disable=unused-import


@pytest.fixture(autouse=True)
def as_a_module_process(monkeypatch):
    monkeypatch.setattr(_internal, "is_controller", False)
