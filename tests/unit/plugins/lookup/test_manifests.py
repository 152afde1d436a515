"""The parsing half of the matrix.stack.manifests lookup (the rendering half runs in every render test)."""
import pytest

from ansible.errors import AnsibleError

from ansible_collections.matrix.stack.plugins.lookup import manifests


def test_documents_drops_empty_documents_and_keeps_the_order():
    text = "---\n# switched off\n---\nkind: A\n---\nkind: B\n...\n"
    assert manifests.documents(text, "x.yaml.j2") == [{"kind": "A"}, {"kind": "B"}]
    assert not manifests.documents("", "empty.yaml.j2")


def test_documents_are_plain_data():
    [doc] = manifests.documents("data:\n  a: '{{ not templated }}'\n", "x.yaml.j2")
    assert doc == {"data": {"a": "{{ not templated }}"}} and type(doc["data"]["a"]) is str  # pylint: disable=unidiomatic-typecheck


def test_invalid_yaml_names_the_template():
    with pytest.raises(AnsibleError, match="broken.yaml.j2 does not render valid YAML"):
        manifests.documents("a: [\n", "broken.yaml.j2")


def test_search_path_puts_the_template_directory_first():
    paths = manifests.search_path({"ansible_search_path": ["/r/roles/x", "/r"]}, "/r/roles/x/templates/a.j2")
    assert paths == ["/r/roles/x/templates", "/r/roles/x/templates", "/r/roles/x", "/r/templates", "/r"]
