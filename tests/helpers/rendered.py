"""The stack rendered once per process by playbooks/site.yml (render mode), shared by the tests that run
the rendered configuration with the real programs.

render_stack() renders an inventory of inventories/test with extra variables on the first call and returns the
same objects afterwards (one playbook start for every test that asks for the same rendering).
"""

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "playbooks" / "site.yml"
_CACHE = {}


def render_stack(run_playbook, inventory="minimal", extra_vars=None):
    """{(kind, name): object} of everything site.yml renders for inventories/test/<inventory>."""
    key = (inventory, json.dumps(extra_vars or {}, sort_keys=True))
    if key not in _CACHE:
        out = Path(tempfile.mkdtemp(prefix="matrix-stack-render-"))
        atexit.register(shutil.rmtree, out, True)
        result = run_playbook(SITE, inventory=REPO / "inventories" / "test" / inventory,
                              extra_vars={"matrix_stack_render_dir": str(out), **(extra_vars or {})})
        assert result.rc == 0, result.stdout[-4000:] + result.stderr[-2000:]
        objects = {}
        for path in out.rglob("*.yaml"):
            obj = yaml.safe_load(path.read_text())
            objects[(obj["kind"], obj["metadata"]["name"])] = obj
        _CACHE[key] = objects
    return _CACHE[key]


# One rendering for the real-program tests of coturn TLS, Element's nginx and the PostgreSQL init script:
# the minimal inventory (every other value a default) plus coturn's TLS Secret and, next to Element's default
# security headers, one whose value holds what nginx treats specially (quotes, backslash, "$").
REAL_PROGRAMS_VARS = {
    "coturn_tls_secret_name": "turn-tls",
    "element_security_headers": {
        **yaml.safe_load((REPO / "roles" / "element" / "defaults" / "main.yml").read_text())["element_security_headers"],
        "X-Matrix-Stack-Test": 'say "hi" \\ to $host, $1',
    },
}


def first(items):
    """The first of ``items``: a failure that says so when there is none (``next`` would raise StopIteration,
    which a generator fixture turns into a confusing RuntimeError)."""
    for item in items:
        return item
    raise AssertionError("no rendered object or field matched")
