"""The stack's variables as a play sees them, without a play: role defaults and vars, an inventory, extra vars.

Used by the unit tests of the validation pass (plugins/plugin_utils/_validate) and of the templates: the
values are templated by ansible-core's own Templar, in process, the way the matrix.stack.validate action
plugin does it.
"""

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".work" / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

# pylint: disable=wrong-import-position,import-outside-toplevel
# Only module-side code is imported here: importing ansible-core's controller code (Templar, DataLoader,
# ansible.errors) flips ansible.module_utils._internal.is_controller for the whole process, after which
# module warnings go to the display instead of the module's result (tests/unit/plugins/modules rely on them).
# The functions below import it when first called; the fixture controller_mode (autouse in the test modules
# that use this helper) restores the flag after each test.
from ansible_collections.matrix.stack.plugins.plugin_utils._validate import engine  # noqa: E402

ROLES_DIR = REPO / "roles"
INVENTORIES = REPO / "inventories"
TEST_INVENTORIES = sorted(path.name for path in (INVENTORIES / "test").iterdir() if path.is_dir())
OPTIONS = engine.load_role_options(str(ROLES_DIR))
NAMES = {name for role in OPTIONS.values() for name in role}
_LOADER = []


@pytest.fixture(autouse=True)
def controller_mode():
    """Give controller mode back after each test (see above): tests that run later see the process as before."""
    from ansible.module_utils import _internal
    before = _internal.is_controller
    yield
    _internal.is_controller = before


def loader():
    """One DataLoader for every test: it caches the parsed files."""
    if not _LOADER:
        from ansible.parsing.dataloader import DataLoader
        _LOADER.append(DataLoader())
    return _LOADER[0]


def inventory_path(name):
    return INVENTORIES / name if (INVENTORIES / name).is_dir() else INVENTORIES / "test" / name


def variables(inventory=None, extra=None, role_vars=False):
    """Role defaults (and, with role_vars, the roles' vars/main.yml), then the inventory, then ``extra``.

    Returns (loader, variables, defaults).
    """
    from ansible_collections.matrix.stack.plugins.plugin_utils._validate import collect
    data_loader = loader()
    defaults = collect.role_defaults(data_loader, str(ROLES_DIR), OPTIONS)
    merged = dict(defaults)
    if role_vars:
        for role in sorted(path.name for path in ROLES_DIR.iterdir()):
            path = ROLES_DIR / role / "vars" / "main.yml"
            if path.exists():
                merged.update(data_loader.load_from_file(str(path), trusted_as_template=True) or {})
    if inventory:
        path = inventory_path(inventory) / "group_vars" / "matrix_stack.yml"
        merged.update(data_loader.load_from_file(str(path), trusted_as_template=True) or {})
    merged.update(extra or {})
    return data_loader, merged, defaults


def problems(inventory="minimal", drop=(), **extra):
    """The validation problems of an inventory with ``extra`` on top (and the variables in ``drop`` unset)."""
    from ansible.template import Templar
    from ansible_collections.matrix.stack.plugins.plugin_utils._validate import collect
    data_loader, merged, defaults = variables(inventory, extra)
    for name in drop:
        merged.pop(name, None)
    values, errors = collect.template_values(Templar(loader=data_loader), merged, NAMES)
    return engine.validate(values, OPTIONS, errors, collect.derived_defaults(defaults, merged, NAMES))


def render(template, inventory="minimal", **extra):
    """Render one role template (``<role>/templates/<file>``) with the inventory's variables; returns the parsed YAML."""
    from ansible.template import Templar, trust_as_template
    data_loader, merged, _defaults = variables(inventory, extra, role_vars=True)
    text = (ROLES_DIR / template.split("/", 1)[0] / "templates" / template.split("/", 1)[1]).read_text(encoding="utf-8")
    templar = Templar(loader=data_loader, variables=merged)
    return yaml.safe_load(templar.template(trust_as_template(text)))
