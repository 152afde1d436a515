"""The shared pod pieces (plugins/filter/pod.py): what every workload template gets from one place."""
import hashlib
import json

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.matrix.stack.plugins.filter import pod


def test_pod_security_context_is_restricted_with_fixed_ids():
    context = pod.restricted_pod_security_context(991, 992, 992, "OnRootMismatch")
    assert context == {"runAsNonRoot": True, "runAsUser": 991, "runAsGroup": 992, "fsGroup": 992,
                       "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}}


def test_pod_security_context_group_defaults_to_user_and_fs_group_is_optional():
    assert pod.restricted_pod_security_context("101") == {
        "runAsNonRoot": True, "runAsUser": 101, "runAsGroup": 101, "seccompProfile": {"type": "RuntimeDefault"}}


def test_container_security_context_drops_everything():
    context = pod.restricted_container_security_context()
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["allowPrivilegeEscalation"] is False and context["privileged"] is False
    assert context["readOnlyRootFilesystem"] is True and context["runAsNonRoot"] is True
    assert pod.restricted_container_security_context(False)["readOnlyRootFilesystem"] is False


def test_pull_secrets():
    assert pod.pull_secrets(["regcred", "other"]) == [{"name": "regcred"}, {"name": "other"}]
    assert not pod.pull_secrets([])
    with pytest.raises(AnsibleFilterError, match="list of Secret names"):
        pod.pull_secrets("regcred")


def test_labels_keep_the_operator_extra_labels_under_ours():
    labels = pod.labels("chat", "synapse", "homeserver", "1.2.3+git", extra={"team": "a", "app.kubernetes.io/name": "x"})
    assert labels == {"team": "a", "app.kubernetes.io/name": "synapse", "app.kubernetes.io/instance": "chat",
                      "app.kubernetes.io/part-of": "matrix-stack", "app.kubernetes.io/managed-by": "matrix.stack",
                      "app.kubernetes.io/component": "homeserver", "app.kubernetes.io/version": "1.2.3_git"}


def test_labels_without_a_name_are_those_of_a_components_secrets():
    labels = pod.labels("chat", None, "synapse", "0.1.0", extra={"team": "a"})
    assert labels == {"team": "a", "app.kubernetes.io/instance": "chat", "app.kubernetes.io/part-of": "matrix-stack",
                      "app.kubernetes.io/managed-by": "matrix.stack", "app.kubernetes.io/component": "synapse",
                      "app.kubernetes.io/version": "0.1.0"}


def test_label_values_are_cut_at_63_characters():
    assert len(pod.labels("i", "n", "c", "v" * 70)["app.kubernetes.io/version"]) == 63
    assert pod.labels("i", "n", "c", "v" * 63)["app.kubernetes.io/version"] == "v" * 63


def test_selector_labels():
    assert pod.selector_labels("chat", "postgres") == {"app.kubernetes.io/name": "postgres", "app.kubernetes.io/instance": "chat"}


def test_config_hash_is_the_sha256_of_the_canonical_json():
    data = {"b": "2", "a": "1"}
    assert pod.config_hash(data) == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    assert pod.config_hash(data, {"x": 1}) == hashlib.sha256(json.dumps([data, {"x": 1}], sort_keys=True).encode()).hexdigest()
    assert pod.config_hash({"a": "1"}) != pod.config_hash({"a": "2"})


def test_cert_manager_annotations():
    assert pod.cert_manager_annotations("letsencrypt") == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    assert pod.cert_manager_annotations("local", "Issuer") == {"cert-manager.io/issuer": "local"}
    assert not pod.cert_manager_annotations("")


def test_every_filter_is_exported():
    assert set(pod.FilterModule().filters()) == {
        "restricted_pod_security_context", "restricted_container_security_context", "pull_secrets", "selector_labels",
        "labels", "config_hash", "cert_manager_annotations"}
