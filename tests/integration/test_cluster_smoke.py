"""The local cluster is a real control plane: admission, validation and controllers all act."""

import json
import time

import pytest

pytestmark = pytest.mark.kube

RESTRICTED_POD_SECURITY = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def wait_for(check, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"condition not met within {timeout}s")


def test_privileged_pod_is_rejected_by_pod_security_admission(kube_cluster, kube_namespace):
    namespace = kube_namespace(restricted=True)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged", "namespace": namespace},
           "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]}}
    result = kube_cluster.kubectl("create", "-f", "-", input=json.dumps(pod), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr
    assert "privileged" in result.stderr
    assert kube_cluster.kubectl("get", "pods", "-n", namespace, "-o", "name").stdout == ""


def test_compliant_deployment_becomes_available(kube_cluster, kube_namespace):
    namespace = kube_namespace(restricted=True)
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": namespace},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {**RESTRICTED_POD_SECURITY, "containers": [
                {"name": "web", "image": "nginxinc/nginx-unprivileged:1.27", "securityContext": RESTRICTED_CONTAINER}]},
        }},
    }
    kube_cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(deployment))

    def available():
        status = json.loads(kube_cluster.kubectl("get", "deployment", "web", "-n", namespace, "-o", "json").stdout)
        conditions = {c["type"]: c["status"] for c in status.get("status", {}).get("conditions", [])}
        return conditions.get("Available") == "True" and status["status"].get("readyReplicas") == 2

    wait_for(available)


def test_statefulset_with_volume_and_job_progress(kube_cluster, kube_namespace):
    namespace = kube_namespace(restricted=True)
    pod_spec = {**RESTRICTED_POD_SECURITY, "containers": [
        {"name": "c", "image": "busybox", "securityContext": RESTRICTED_CONTAINER}]}
    objects = [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": namespace},
         "spec": {"serviceName": "db", "replicas": 1, "selector": {"matchLabels": {"app": "db"}},
                  "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                      **pod_spec, "containers": [{**pod_spec["containers"][0],
                                                  "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                  "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                      "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once", "namespace": namespace},
         "spec": {"template": {"spec": {**pod_spec, "restartPolicy": "Never"}}}},
    ]
    kube_cluster.kubectl("apply", "--server-side", "-f", "-",
                         input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))

    def statefulset_ready():
        sts = json.loads(kube_cluster.kubectl("get", "statefulset", "db", "-n", namespace, "-o", "json").stdout)
        return sts.get("status", {}).get("readyReplicas") == 1

    def job_complete():
        job = json.loads(kube_cluster.kubectl("get", "job", "once", "-n", namespace, "-o", "json").stdout)
        return job.get("status", {}).get("succeeded") == 1

    wait_for(statefulset_ready)
    wait_for(job_complete)
    pvc = json.loads(kube_cluster.kubectl("get", "pvc", "data-db-0", "-n", namespace, "-o", "json").stdout)
    assert pvc["status"]["phase"] == "Bound"


def test_unknown_field_is_rejected_by_server_side_field_validation(kube_cluster, kube_namespace):
    namespace = kube_namespace(restricted=True)
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "typo", "namespace": namespace},
                  "data": {"a": "b"}, "dataa": {"c": "d"}}
    # Server-side apply checks the typed schema; create/update with fieldValidation=Strict does too.
    applied = kube_cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(config_map), check=False)
    assert applied.returncode != 0
    assert ".dataa: field not declared in schema" in applied.stderr
    created = kube_cluster.kubectl("create", "--validate=strict", "-f", "-", input=json.dumps(config_map), check=False)
    assert created.returncode != 0
    assert 'unknown field "dataa"' in created.stderr
    missing = kube_cluster.kubectl("get", "configmap", "typo", "-n", namespace, check=False)
    assert missing.returncode != 0


def test_server_reports_the_pinned_release(kube_cluster):
    version = json.loads(kube_cluster.kubectl("get", "--raw=/version").stdout)
    assert version["gitVersion"] == "v1.34.4"
