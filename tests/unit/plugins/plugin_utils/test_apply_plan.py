"""Planning of the one apply step (plugins/plugin_utils/_apply/plan.py): pure functions, no cluster."""

import json
import sys
from pathlib import Path

import pytest
import yaml

COLLECTIONS = Path(__file__).resolve().parents[4] / ".work" / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

# pylint: disable=wrong-import-position
from ansible_collections.matrix.stack.plugins.plugin_utils._apply import plan  # noqa: E402

LABELS = {"app.kubernetes.io/instance": "matrix", "app.kubernetes.io/managed-by": "matrix.stack",
          "app.kubernetes.io/part-of": "matrix-stack"}
APPLIED = [{"manager": "matrix.stack", "operation": "Apply"}]


def obj(kind, name, api="v1", rv="1", generation=None, managed=None, **extra):
    metadata = {"name": name, "namespace": "ns", "labels": dict(LABELS), "resourceVersion": rv,
                "managedFields": APPLIED if managed is None else managed}
    if generation is not None:
        metadata["generation"] = generation
    return {"apiVersion": api, "kind": kind, "metadata": metadata, **extra}


def desired(kind, name, api="v1", **extra):
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "ns", "labels": dict(LABELS)},
            **extra}


# ----- what to apply -------------------------------------------------------------------------------

def test_flatten_keeps_hand_over_order_and_namespace_goes_first():
    components = [
        {"name": "namespace", "manifests": [desired("Namespace", "ns")]},
        {"name": "postgres", "secrets": [{"name": "s"}]},
        {"name": "synapse", "manifests": [desired("ConfigMap", "a"), desired("Deployment", "a", "apps/v1")]},
        {"name": "wait", "wait": [{"kind": "Deployment", "name": "a"}]},
    ]
    entries = plan.flatten(components)
    assert [(c, o["kind"]) for c, o in entries] == [("namespace", "Namespace"), ("synapse", "ConfigMap"),
                                                    ("synapse", "Deployment")]
    first, rest = plan.split_namespaces(entries)
    assert [o["kind"] for _c, o in first] == ["Namespace"]
    assert [o["kind"] for _c, o in rest] == ["ConfigMap", "Deployment"]


def test_flatten_refuses_duplicates_and_malformed_objects():
    with pytest.raises(plan.PlanError, match="ConfigMap/a is rendered twice"):
        plan.flatten([{"name": "x", "manifests": [desired("ConfigMap", "a")]},
                      {"name": "y", "manifests": [desired("ConfigMap", "a")]}])
    with pytest.raises(plan.PlanError, match="no metadata.name"):
        plan.flatten([{"name": "x", "manifests": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}]}])
    with pytest.raises(plan.PlanError, match="no kind"):
        plan.flatten([{"name": "x", "manifests": [{"apiVersion": "v1", "metadata": {"name": "a"}}]}])
    # Same name, different kinds or groups: different objects.
    assert len(plan.flatten([{"name": "x", "manifests": [desired("ConfigMap", "a"), desired("Service", "a")]}])) == 2


def test_selector_names_instance_manager_and_part_of():
    assert plan.instance_selector("chat") == ("app.kubernetes.io/instance=chat,app.kubernetes.io/managed-by=matrix.stack,"
                                              "app.kubernetes.io/part-of=matrix-stack")


def test_prunable_kinds_never_include_pvcs_or_secrets_but_add_unknown_handed_kinds():
    entries = plan.flatten([{"name": "x", "manifests": [desired("PodDisruptionBudget", "a", "policy/v1"),
                                                        desired("Secret", "s"), desired("ConfigMap", "c")]}])
    kinds = plan.prunable_kinds(entries)
    assert ("policy/v1", "PodDisruptionBudget") in kinds
    assert not {kind for _api, kind in kinds} & {"Secret", "PersistentVolumeClaim", "Namespace"}
    assert [kind for _api, kind in kinds].count("ConfigMap") == 1


# ----- what changed ------------------------------------------------------------------------------------

def test_changed_by_resource_version_on_a_real_apply():
    before = obj("ConfigMap", "a", rv="5", data={"k": "v"})
    assert plan.changed(None, before, dry_run=False)
    assert not plan.changed(before, obj("ConfigMap", "a", rv="5", data={"k": "v"}), dry_run=False)
    assert plan.changed(before, obj("ConfigMap", "a", rv="6", data={"k": "v"}), dry_run=False)


def test_changed_by_content_on_a_dry_run():
    before = obj("Deployment", "a", "apps/v1", rv="5", generation=2, spec={"replicas": 1}, status={"ready": 1})
    same = obj("Deployment", "a", "apps/v1", rv="5", generation=2, spec={"replicas": 1}, status={"ready": 0},
               managed=[{"manager": "matrix.stack", "operation": "Apply", "time": "later"}])
    assert not plan.changed(before, same, dry_run=True)
    other = obj("Deployment", "a", "apps/v1", rv="5", generation=3, spec={"replicas": 2})
    assert plan.changed(before, other, dry_run=True)


def test_summary_counts():
    a_before, a_after = obj("ConfigMap", "a", rv="1"), obj("ConfigMap", "a", rv="2")
    b = obj("ConfigMap", "b", rv="1")
    report = plan.summary({"ConfigMap/a": (a_before, a_after), "ConfigMap/b": (b, b),
                           "ConfigMap/c": (None, obj("ConfigMap", "c"))}, dry_run=False)
    assert report == {"created": ["ConfigMap/c"], "updated": ["ConfigMap/a"], "unchanged": 1}


# ----- what to wait for -------------------------------------------------------------------------------

def ready_deployment(name, generation, rv="1"):
    return obj("Deployment", name, "apps/v1", rv=rv, generation=generation, spec={"replicas": 1},
               status={"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1,
                       "readyReplicas": 1})


def test_waits_only_for_changed_or_unready_workloads_that_were_asked_for():
    unchanged = ready_deployment("same", 3)
    rolled_before, rolled_after = ready_deployment("rolled", 3), ready_deployment("rolled", 4)
    rolled_after["status"]["observedGeneration"] = 3
    stuck = ready_deployment("stuck", 2)
    stuck["status"]["availableReplicas"] = 0
    outcomes = {("Deployment", "same"): (unchanged, unchanged), ("Deployment", "rolled"): (rolled_before, rolled_after),
                ("Deployment", "new"): (None, ready_deployment("new", 1)), ("Deployment", "stuck"): (stuck, stuck),
                ("Deployment", "not-asked"): (None, ready_deployment("not-asked", 1))}
    requested = {("Deployment", "same"), ("Deployment", "rolled"), ("Deployment", "new"), ("Deployment", "stuck")}
    assert plan.plan_waits(requested, outcomes) == [
        ("Deployment", "new"), ("Deployment", "rolled"), ("Deployment", "stuck")]
    assert plan.plan_waits(set(), outcomes) == []


def test_wait_list_refuses_unknown_kinds():
    assert plan.wait_list([{"name": "x", "wait": [{"kind": "StatefulSet", "name": "db"}]}]) == {("StatefulSet", "db")}
    with pytest.raises(plan.PlanError, match="cannot wait for kind 'Job'"):
        plan.wait_list([{"name": "x", "wait": [{"kind": "Job", "name": "j"}]}])


def test_ready_statefulset_needs_current_revision():
    sts = obj("StatefulSet", "db", "apps/v1", generation=1, spec={"replicas": 1, "updateStrategy": {"type": "RollingUpdate"}},
              status={"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
                      "currentRevision": "a", "updateRevision": "a"})
    assert plan.ready(sts)
    sts["status"]["updateRevision"] = "b"
    assert not plan.ready(sts)
    sts["status"]["updateRevision"] = "a"
    sts["status"]["observedGeneration"] = 0
    assert not plan.ready(sts)


# ----- what to prune ----------------------------------------------------------------------------------

def test_prune_what_is_no_longer_rendered_never_pvcs_or_secrets():
    entries = plan.flatten([{"name": "synapse", "manifests": [desired("ConfigMap", "keep")]}])
    existing = [obj("ConfigMap", "keep"), obj("ConfigMap", "gone"), obj("Deployment", "gone", "apps/v1"),
                obj("PersistentVolumeClaim", "data"), obj("Secret", "keys"), obj("Namespace", "ns"),
                obj("ConfigMap", "by-hand", managed=[{"manager": "kubectl", "operation": "Apply"}]),
                obj("ConfigMap", "updated-only", managed=[{"manager": "matrix.stack", "operation": "Update"}])]
    terminating = obj("Service", "terminating")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    existing.append(terminating)
    pruned = plan.plan_prune(existing, entries, "matrix.stack")
    assert [plan.label(o) for o in pruned] == ["ConfigMap/gone", "Deployment/gone"]


def test_prune_with_nothing_rendered_elsewhere_keeps_other_groups_apart():
    # Same kind and name in another API group is another object.
    entries = plan.flatten([{"name": "x", "manifests": [desired("Thing", "a", "one.example/v1")]}])
    pruned = plan.plan_prune([obj("Thing", "a", "two.example/v1")], entries, "matrix.stack")
    assert [o["apiVersion"] for o in pruned] == ["two.example/v1"]


def test_uninstall_selects_the_instance_and_keeps_data_unless_purging():
    kept = plan.removal_selectors("mx", False, "matrix.stack/secret=true")
    assert {kind for _api, kind, _sel in kept} == {kind for _api, kind in plan.PRUNABLE_KINDS}
    assert {sel for _api, _kind, sel in kept} == {"app.kubernetes.io/instance=mx,app.kubernetes.io/managed-by=matrix.stack"}
    purged = plan.removal_selectors("mx", True, "matrix.stack/secret=true")
    extra = purged[len(kept):]
    assert extra == [("v1", "PersistentVolumeClaim", "app.kubernetes.io/instance=mx"),
                     ("v1", "Secret", "app.kubernetes.io/instance=mx,matrix.stack/secret=true")]


# ----- diffs ---------------------------------------------------------------------------------------------

def test_diff_leaves_out_server_fields_and_secret_values():
    before = obj("Secret", "s", rv="3", data={"password": "c2VjcmV0LXZhbHVlLTEyMzQ1"}, status={"x": 1})
    after = obj("Secret", "s", rv="4", data={"password": "b3RoZXItdmFsdWUtNjc4OTA=", "new": "eHl6"})
    diff = plan.object_diff(before, after)
    text = diff["before"] + diff["after"]
    assert "c2VjcmV0" not in text and "b3RoZXI" not in text and "eHl6" not in text
    assert "resourceVersion" not in text and "managedFields" not in text and "status" not in text
    assert yaml.safe_load(diff["after"])["data"] == {"password": plan.REDACTED, "new": plan.REDACTED}
    assert diff["after_header"] == "Secret/s"
    created = plan.object_diff(None, obj("ConfigMap", "c"))
    assert created["before"] == "" and created["before_header"] == "ConfigMap/c (absent)"
    gone = plan.object_diff(obj("ConfigMap", "c"), None)
    assert gone["after"] == "" and gone["after_header"] == "ConfigMap/c (pruned)"
    assert plan.object_diff(obj("ConfigMap", "c"), None, gone="removed")["after_header"] == "ConfigMap/c (removed)"


def test_missing_refs_names_secret_and_key():
    refs = [{"variable": "smtp", "name": "mail", "key": "password"}, {"variable": "tls", "name": "tls", "key": "tls.crt"},
            {"variable": "oidc", "name": "oidc", "key": "secret"}]
    secrets = {"mail": {"data": {"password": "eA=="}}, "tls": {"data": {"tls.key": "eA=="}}, "oidc": None}
    assert [r["variable"] for r in plan.missing_refs(refs, secrets)] == ["tls", "oidc"]


# ----- render mode ----------------------------------------------------------------------------------------

def test_render_files_layout_and_content():
    entries = plan.flatten([{"name": "namespace", "manifests": [desired("Namespace", "ns")]},
                            {"name": "synapse", "manifests": [desired("ConfigMap", "matrix-synapse", data={"a": "b"})]}])
    files = plan.render_files(entries, {"namespace": "00", "synapse": "40"})
    assert sorted(files) == ["00-namespace/namespace-ns.yaml", "40-synapse/configmap-matrix-synapse.yaml"]
    text = files["40-synapse/configmap-matrix-synapse.yaml"]
    assert text.startswith("---\n")
    assert yaml.safe_load(text)["data"] == {"a": "b"}
    with pytest.raises(plan.PlanError, match="no render order"):
        plan.render_files(entries, {"namespace": "00"})
    assert plan.render_dirs({"namespace": "00", "synapse": "40"}) == {"00-namespace", "40-synapse"}


def test_secrets_markdown_lists_names_and_keys_never_values():
    text = plan.secrets_markdown("chat", [
        {"name": "synapse", "secrets": [{"name": "chat-synapse", "description": "Synapse   secrets\n",
                                         "keys_": [{"name": "signing.key", "type": "signing_key"},
                                                   {"name": "form_secret", "type": "alnum", "length": 64}]}],
         "secret_refs": [{"variable": "synapse_email_smtp_password_secret_name", "name": "smtp", "key": "password"}]}])
    assert "`chat`" in text and "## Secret `chat-synapse` (synapse)" in text and "Synapse secrets" in text
    assert "| `signing.key` | signing_key |" in text and "| `form_secret` | alnum, 64 characters |" in text
    assert "| `smtp` | `password` | `synapse_email_smtp_password_secret_name` |" in text


def test_render_mode_writes_in_one_go_and_removes_only_its_own_directories(tmp_path):
    from ansible_collections.matrix.stack.plugins.action import apply as action  # pylint: disable=import-outside-toplevel
    order = {"namespace": "00", "element": "50"}
    components = [{"name": "namespace", "manifests": [desired("Namespace", "ns")]},
                  {"name": "element", "manifests": [desired("ConfigMap", "matrix-element")]}]
    out = tmp_path / "out"
    first = action.render(str(out), "ns", components, plan.flatten(components), order, check=False)
    assert first["changed"] is True and first["files"] == 2
    assert (out / "50-element" / "configmap-matrix-element.yaml").exists() and (out / "SECRETS.md").exists()
    (out / "notes.yaml").write_text("mine\n")
    (out / "99-other").mkdir()
    again = action.render(str(out), "ns", components, plan.flatten(components), order, check=False)
    assert again["changed"] is False
    fewer = components[:1]
    checked = action.render(str(out), "ns", fewer, plan.flatten(fewer), order, check=True)
    assert checked["changed"] is True and (out / "50-element").exists(), "check mode wrote to the render directory"
    action.render(str(out), "ns", fewer, plan.flatten(fewer), order, check=False)
    assert not (out / "50-element").exists()
    assert (out / "notes.yaml").exists() and (out / "99-other").is_dir()


# ----- skipping what is already applied (stamp / in_sync) ---------------------------------------------------------

def _live(stamped, **extra_spec):
    """What the API server returns for an applied object: defaults and server metadata added."""
    live = json.loads(json.dumps(stamped))
    live["metadata"].update(resourceVersion="7", uid="u", managedFields=[{"manager": "matrix.stack"}])
    live["spec"].update({"sessionAffinity": "None"}, **extra_spec)
    live["spec"]["ports"][0]["targetPort"] = 8008
    live["status"] = {"loadBalancer": {}}
    return live


def _service(**spec):
    spec = dict({"ports": [{"name": "http", "port": 8008, "protocol": "TCP"}], "selector": {"app": "s"}}, **spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "labels": {"a": "1"}}, "spec": spec}


def test_stamp_carries_the_hash_of_the_rendering_and_is_stable():
    first, again = plan.stamp(_service()), plan.stamp(_service())
    assert first == again
    assert first["metadata"]["annotations"][plan.APPLIED_ANNOTATION] == plan.applied_hash(_service())
    assert plan.stamp(_service(type="NodePort"))["metadata"]["annotations"] != first["metadata"]["annotations"]
    assert plan.applied_hash(first) == plan.applied_hash(_service())  # the annotation itself is not hashed


def test_in_sync_when_applied_and_nothing_drifted():
    stamped = plan.stamp(_service())
    assert plan.in_sync(stamped, _live(stamped))


def test_not_in_sync_when_drifted_new_or_rendered_differently():
    stamped = plan.stamp(_service())
    drifted = _live(stamped)
    drifted["spec"]["selector"] = {"app": "other"}
    assert not plan.in_sync(stamped, drifted)
    assert not plan.in_sync(stamped, None)
    # A field removed from the rendering: the live object still holds it, only the hash tells.
    previous = plan.stamp(_service(externalTrafficPolicy="Local"))
    assert plan.contains(_live(previous), _service()) and not plan.in_sync(stamped, _live(previous))
    # Applied by an older version (no hash yet).
    unstamped = _live(stamped)
    del unstamped["metadata"]["annotations"]
    assert not plan.in_sync(stamped, unstamped)


def test_contains_is_strict_about_types_and_list_lengths():
    assert plan.contains({"a": [1, 2], "b": "x", "c": 0}, {"a": [1, 2], "b": "x"})
    assert not plan.contains({"a": [1, 2, 3]}, {"a": [1, 2]})
    assert not plan.contains({"a": 1}, {"a": True})
    assert not plan.contains({"a": "1"}, {"a": 1})
    assert not plan.contains({}, {"a": None})


def test_instance_objects_are_those_the_selector_selects():
    ours = {"app.kubernetes.io/instance": "chat", "app.kubernetes.io/managed-by": "matrix.stack",
            "app.kubernetes.io/part-of": "matrix-stack"}
    objects = [{"metadata": {"name": "a", "labels": ours}},
               {"metadata": {"name": "b", "labels": dict(ours, **{"app.kubernetes.io/instance": "other"})}},
               {"metadata": {"name": "c", "labels": {"app.kubernetes.io/instance": "chat"}}},
               {"metadata": {"name": "kube-root-ca.crt"}}]
    assert [obj["metadata"]["name"] for obj in plan.instance_objects(objects, "chat")] == ["a"]
    selector = dict(pair.split("=") for pair in plan.instance_selector("chat").split(","))
    assert selector == ours
