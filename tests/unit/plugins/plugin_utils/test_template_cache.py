"""The compiled-template cache of the matrix.stack.manifests lookup, on ansible-core's real templating engine."""
import os
import stat
import tempfile
from pathlib import Path

import pytest

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from ansible_collections.matrix.stack.plugins.plugin_utils import _template_cache as tc

# A template that needs a nested template (a variable whose value is itself a template) and a backslash.
SOURCE = "name: {{ name }}\nlabel: {{ label }}\npath: 'a\\\\b'\n"
VARIABLES = {"instance": "mx", "name": trust_as_template("{{ instance }}-synapse"), "label": "plain"}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(tc.ENV_VAR, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def compiles(monkeypatch):
    """The template strings compiled by Jinja itself (not loaded from the cache)."""
    seen = []
    real = Templar(loader=DataLoader())._engine.environment.__class__.compile  # pylint: disable=protected-access

    def spy(self, source, *args, **kwargs):
        seen.append(source if isinstance(source, str) else "<node>")
        return real(self, source, *args, **kwargs)

    monkeypatch.setattr(Templar(loader=DataLoader())._engine.environment.__class__, "compile", spy)  # pylint: disable=protected-access
    return seen


def render(source, variables=None, path="/roles/synapse/templates/x.yaml.j2"):
    templar = Templar(loader=DataLoader(), variables=dict(variables or VARIABLES))
    with tc.compiled_once(templar, source, path) as cached:
        return templar.template(trust_as_template(source), escape_backslashes=False), cached


def test_second_render_compiles_nothing_and_renders_the_same(cache_dir, compiles):
    first, cached = render(SOURCE)
    assert cached and first == "name: mx-synapse\nlabel: plain\npath: 'a\\\\b'\n"
    assert SOURCE in compiles and "{{ instance }}-synapse" in compiles  # the template and its nested template
    assert len(list(cache_dir.iterdir())) >= 2
    compiles.clear()
    second, _cached = render(SOURCE)
    assert second == first and not [s for s in compiles if s in (SOURCE, "{{ instance }}-synapse")]
    # Other values, same code.
    assert render(SOURCE, {**VARIABLES, "instance": "other"})[0].startswith("name: other-synapse\n")


def test_changed_template_compiles_anew(cache_dir, compiles):  # pylint: disable=unused-argument
    render(SOURCE)
    changed = SOURCE.replace("label:", "tag:")
    compiles.clear()
    assert render(changed)[0] == "name: mx-synapse\ntag: plain\npath: 'a\\\\b'\n"
    assert changed in compiles


def test_escape_backslashes_is_part_of_the_key(cache_dir):  # pylint: disable=unused-argument
    assert tc.cache_name("x", True) != tc.cache_name("x", False)
    source = "{{ '\\\\n' | length }}"
    templar = Templar(loader=DataLoader())
    with tc.compiled_once(templar, source, "/t/a.j2"):
        unescaped = templar.template(trust_as_template(source), escape_backslashes=False)
    with tc.compiled_once(templar, source, "/t/a.j2"):
        escaped = templar.template(trust_as_template(source), escape_backslashes=True)
    # Each as ansible-core renders it without the cache.
    assert unescaped == Templar(loader=DataLoader()).template(trust_as_template(source), escape_backslashes=False)
    assert escaped == Templar(loader=DataLoader()).template(trust_as_template(source), escape_backslashes=True)


def test_off_and_override_headers_compile_as_usual(cache_dir, monkeypatch, compiles):
    header = "#jinja2: variable_start_string:'[%', variable_end_string:'%]'\nname: [% label %]\n"
    assert render(header) == ("name: plain\n", False)
    assert not cache_dir.exists() or not list(cache_dir.iterdir())
    monkeypatch.setenv(tc.ENV_VAR, "off")
    assert render(SOURCE) == ("name: mx-synapse\nlabel: plain\npath: 'a\\\\b'\n", False)
    assert SOURCE in compiles
    # The environment is left as it was: no instance attribute stays behind.
    templar = Templar(loader=DataLoader())
    monkeypatch.setenv(tc.ENV_VAR, str(cache_dir))
    with tc.compiled_once(templar, SOURCE, "/t/a.j2") as cached:
        assert cached
    assert not {"compile", "overlay"} & set(vars(templar._engine.environment))  # pylint: disable=protected-access


def test_default_is_a_private_directory_of_the_user(monkeypatch, tmp_path, compiles):
    # The default location (no MATRIX_STACK_TEMPLATE_CACHE): Jinja's per-user directory in the temporary directory,
    # here a test's own temporary directory, so that the machine's stays as it was.
    monkeypatch.delenv(tc.ENV_VAR, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(tc, "_caches", {})
    directory = tmp_path / ("_jinja2-cache-%d" % os.getuid())
    first, cached = render(SOURCE)
    assert cached and Path(tc.bytecode_cache().directory) == directory
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700 and list(directory.iterdir())
    compiles.clear()
    assert render(SOURCE)[0] == first and SOURCE not in compiles
