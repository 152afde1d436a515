"""docs/configuration.md is generated from the roles' argument specs and must not drift from them.

Also checks that every role's defaults/main.yml and argument spec (``main`` entry point) describe the same
variables with the same defaults, and that every option spec only uses keys Ansible knows (a flow-style
``{description: a, b}`` silently turns ``b`` into a key and truncates the description).
"""

import importlib.machinery
import importlib.util
import os

import pytest
import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
GENERATOR = os.path.join(REPO, "scripts", "gen-config-docs")
ROLES = sorted(
    name for name in os.listdir(os.path.join(REPO, "roles"))
    if os.path.isfile(os.path.join(REPO, "roles", name, "meta", "argument_specs.yml"))
)
# Keys of an argument spec option that ansible-core's role argument validation understands.
OPTION_KEYS = {
    "type", "elements", "default", "choices", "required", "description", "options", "aliases", "no_log",
    "version_added", "apply_defaults", "required_if", "required_one_of", "required_together",
    "required_by", "mutually_exclusive", "fallback", "deprecated_aliases", "removed_in_version",
    "removed_at_date", "removed_from_collection",
}
# Known problems in roles/ that this test reports but that are not fixed here (roles are owned by
# another change). Remove an entry once the role is fixed: the strict xfail then turns into a failure.
KNOWN_BAD_OPTION_KEYS = {
    # role: "reason" -- e.g. the element spec had flow-style descriptions with commas
    # ({description: a, b}), which YAML splits into bogus keys; fixed in roles/element.
}


def load_generator():
    """Import scripts/gen-config-docs (a script without .py suffix) as a module."""
    loader = importlib.machinery.SourceFileLoader("gen_config_docs", GENERATOR)
    spec = importlib.util.spec_from_loader("gen_config_docs", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def spec_options(role):
    data = load(os.path.join(REPO, "roles", role, "meta", "argument_specs.yml")) or {}
    return ((data.get("argument_specs") or {}).get("main") or {}).get("options") or {}


def defaults(role):
    path = os.path.join(REPO, "roles", role, "defaults", "main.yml")
    return (load(path) or {}) if os.path.exists(path) else {}


def test_roles_found():
    assert {"matrix_stack", "synapse", "postgres", "coturn", "element", "networkpolicy"} <= set(ROLES)


def test_configuration_md_is_generated():
    generator = load_generator()
    expected = generator.render(REPO)
    with open(os.path.join(REPO, "docs", "configuration.md"), encoding="utf-8") as handle:
        current = handle.read()
    assert current == expected, "docs/configuration.md is stale: run .work/venv/bin/python scripts/gen-config-docs"


def test_every_option_documented():
    text = load_generator().render(REPO)
    missing = [f"{role}: {name}" for role in ROLES for name in spec_options(role) if f"| `{name}` |" not in text]
    assert not missing, f"options missing from the generated page: {missing}"


def test_generator_check_mode(tmp_path):
    """--check fails on a stale page and passes on a fresh one (the generator itself can fail)."""
    generator = load_generator()
    repo = tmp_path / "repo"
    role = repo / "roles" / "demo"
    (role / "meta").mkdir(parents=True)
    (role / "defaults").mkdir()
    (repo / "docs").mkdir()
    (role / "meta" / "argument_specs.yml").write_text(
        "argument_specs:\n  main:\n    short_description: Demo.\n    options:\n"
        "      demo_a: {type: str, default: x, choices: [x, y], description: 'A | B, with C(code).'}\n"
        "      demo_b: {type: str, required: true, description: Required.}\n"
        "      demo_c: {type: list, elements: str, description: Long.}\n",
        encoding="utf-8",
    )
    (role / "defaults" / "main.yml").write_text("demo_a: x\ndemo_c: " + repr(["10.0.0.0/8"] * 10) + "\n", encoding="utf-8")
    (repo / "playbooks").mkdir()
    (repo / "playbooks" / "uninstall.yml").write_text(
        "- hosts: all\n  tasks:\n    - debug: {msg: \"{{ matrix_demo_flag | default(false) }} {{ demo_a }}\"}\n"
        "      register: matrix_demo_result\n",
        encoding="utf-8",
    )
    assert generator.main(["--repo", str(repo), "--check"]) == 1
    assert generator.main(["--repo", str(repo)]) == 0
    assert generator.main(["--repo", str(repo), "--check"]) == 0
    page = (repo / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert "| `demo_a` | str | `x` | `x`, `y` | no | A \\| B, with C(code). |" not in page
    assert "| `demo_a` | str | `x` | `x`, `y` | no | A \\| B, with `code`. |" in page
    assert "| `demo_b` | str |  |  | yes | Required. |" in page
    assert "[see below](#demo_c-default)" in page and "### `demo_c` default" in page
    assert "| `matrix_demo_flag` | `uninstall.yml` | `false` | [uninstall.md](uninstall.md) |" in page
    assert "matrix_demo_result" not in page  # registered, not an input


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_spec_name_the_same_variables(role):
    """Every default has a spec entry; every spec entry has a default unless it is required (no default by design)."""
    options = spec_options(role)
    role_defaults = defaults(role)
    not_in_spec = sorted(set(role_defaults) - set(options))
    not_in_defaults = sorted(name for name in set(options) - set(role_defaults) if not options[name].get("required"))
    required_with_default = sorted(name for name in options if options[name].get("required") and name in role_defaults)
    problems = []
    if not_in_spec:
        problems.append(f"in roles/{role}/defaults/main.yml but not in meta/argument_specs.yml: {not_in_spec}")
    if not_in_defaults:
        problems.append(f"in roles/{role}/meta/argument_specs.yml but not in defaults/main.yml (and not required): {not_in_defaults}")
    if required_with_default:
        problems.append(f"required in the spec but defaulted in roles/{role}/defaults/main.yml: {required_with_default}")
    assert not problems, "; ".join(problems)


@pytest.mark.parametrize("role", ROLES)
def test_spec_defaults_match_defaults_file(role):
    options = spec_options(role)
    role_defaults = defaults(role)
    differ = [
        f"{name}: spec {options[name]['default']!r} != defaults/main.yml {role_defaults[name]!r}"
        for name in options
        if "default" in options[name] and name in role_defaults and options[name]["default"] != role_defaults[name]
    ]
    assert not differ, f"roles/{role}: " + "; ".join(differ)


@pytest.mark.parametrize(
    "role",
    [
        pytest.param(role, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BAD_OPTION_KEYS[role]))
        if role in KNOWN_BAD_OPTION_KEYS else role
        for role in ROLES
    ],
)
def test_option_specs_use_known_keys(role):
    def walk(options, prefix=""):
        for name, option in options.items():
            for key in sorted(set(option or {}) - OPTION_KEYS):
                yield f"{prefix}{name}: unknown key {key!r}"
            yield from walk((option or {}).get("options") or {}, f"{prefix}{name}.")

    bad = list(walk(spec_options(role)))
    assert not bad, f"roles/{role}/meta/argument_specs.yml: " + "; ".join(bad)
