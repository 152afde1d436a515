"""Unit tests for the restore plan of backup/restore.py: the list of steps check mode prints is the list a real run
executes, in that order (pure functions; the real restores run in tests/integration/test_matrix_backup*.py)."""

import pytest

from ._backup_helpers import REPO  # noqa: F401  pylint: disable=unused-import
from ansible_collections.matrix.stack.plugins.module_utils.backup import restore
from ansible_collections.matrix.stack.plugins.module_utils.backup.config import Config

FULL = restore.Target(
    media="pod chat/synapse-0:/data/media", media_in_pod=True, set_has_media=True, deployment="chat/synapse",
    database="synapse", database_state="non-empty", dump_file="db.dump.age", dump_major=17,
    pg_restore_version="17.11", server_version="17.11", kubernetes_secrets=("chat/synapse-keys",),
    secret_files=("/etc/x/key",), health_url="http://127.0.0.1:8008/health")


def texts(steps):
    return [s.text for s in steps]


def test_full_restore_order_and_texts():
    steps = restore.plan_restore(FULL)
    assert [s.action for s in steps] == [
        "media", "scale_down", "drop_database", "create_database", "pg_restore", "truncate_one_time_keys",
        "kubernetes_secrets", "secret_files", "scale_up", "wait_healthy"]
    assert texts(steps) == [
        "restore media into pod chat/synapse-0:/data/media (additive; before scaling down, the pod mounts the volume)",
        "scale Deployment chat/synapse to 0",
        "drop database synapse (non-empty)",
        "create database synapse (UTF8, C collation, template0)",
        "pg_restore db.dump.age (PostgreSQL 17 dump, pg_restore 17.11, server 17.11)",
        "TRUNCATE e2e_one_time_keys_json",
        "restore Secrets chat/synapse-keys",
        "restore secret files /etc/x/key",
        "scale Deployment back up",
        "wait for http://127.0.0.1:8008/health",
    ]


def test_local_media_is_restored_after_the_database_and_an_absent_database_is_not_dropped():
    target = restore.Target(media="/srv/media", set_has_media=True, database="synapse", database_state="absent",
                            dump_file="db.dump", dump_major=16, pg_restore_version="17.1", server_version="17.1")
    steps = restore.plan_restore(target)
    assert [s.action for s in steps] == ["create_database", "pg_restore", "truncate_one_time_keys", "media"]
    assert steps[-1].text == "restore media into /srv/media"


def test_empty_database_is_dropped_and_recreated():
    steps = restore.plan_restore(restore.Target(database="synapse", database_state="empty"))
    assert texts(steps)[:2] == ["drop database synapse (empty)", "create database synapse (UTF8, C collation, template0)"]


@pytest.mark.parametrize("target", [
    restore.Target(media="/srv/media", set_has_media=False),       # the set has no media
    restore.Target(media=None, set_has_media=True),                # no media target given
])
def test_no_media_step_without_both_a_target_and_media_in_the_set(target):
    assert restore.plan_restore(target) == []


def test_nothing_to_do_is_an_empty_plan():
    assert restore.plan_restore(restore.Target()) == []


def test_every_action_is_a_step_the_run_can_execute():
    for step in restore.plan_restore(FULL):
        assert callable(getattr(restore._Run, step.action, None)), step.action  # pylint: disable=protected-access


class _Recorder:
    def __init__(self, fail_at=None):
        self.calls, self.fail_at, self.forgotten, self.stats = [], fail_at, False, {}

    def __getattr__(self, name):
        def step():
            if name == self.fail_at:
                raise RuntimeError(name)
            self.calls.append(name)
        return step

    def forget_secrets(self):
        self.forgotten = True


def test_run_steps_executes_exactly_the_plan_in_order():
    steps = restore.plan_restore(FULL)
    run = _Recorder()
    assert restore.run_steps(steps, run) == {}
    assert run.calls == [s.action for s in steps] and run.forgotten


def test_run_steps_stops_at_the_first_failure_and_forgets_the_secrets():
    run = _Recorder(fail_at="pg_restore")
    with pytest.raises(RuntimeError):
        restore.run_steps(restore.plan_restore(FULL), run)
    assert run.calls == ["media", "scale_down", "drop_database", "create_database"] and run.forgotten


class _Media:
    kind = "local"

    @staticmethod
    def describe():
        return "/srv/media"


MANIFEST = {"media": {"files": 1}, "secrets": {"kubernetes": ["chat/keys"], "files": ["/etc/x/key"]},
            "database": {"file": "db.dump"}}


def test_target_without_a_kubernetes_client_neither_scales_nor_restores_secrets():
    cfg = Config(media=_Media(), synapse_deployment="synapse", synapse_namespace="chat", health_url="http://h/health")
    target, pg_facts = restore.find_target(cfg, MANIFEST, "S")
    assert pg_facts is None and target.database is None
    assert target.deployment is None and target.kubernetes_secrets == ()
    assert target.secret_files == ("/etc/x/key",) and target.media == "/srv/media" and not target.media_in_pod
    assert [s.action for s in restore.plan_restore(target)] == ["media", "secret_files", "wait_healthy"]


def test_target_with_a_kubernetes_client_scales_the_deployment_and_restores_its_secrets():
    cfg = Config(kube_api=object(), synapse_deployment="synapse", synapse_namespace="chat")
    target, _facts = restore.find_target(cfg, MANIFEST, "S")
    assert target.deployment == "chat/synapse" and target.kubernetes_secrets == ("chat/keys",)
    assert [s.action for s in restore.plan_restore(target)] == [
        "scale_down", "kubernetes_secrets", "secret_files", "scale_up"]


def test_config_is_a_frozen_dataclass_with_the_documented_defaults():
    cfg = Config()
    assert (cfg.set_name, cfg.verify_media, cfg.jobs, cfg.health_timeout, cfg.lock_wait) == ("latest", "checksum", 2, 300, 0)
    assert not cfg.encrypted and not cfg.scales_synapse and cfg.pg_clients is not None
    with pytest.raises(TypeError):
        Config(no_such_option=1)  # pylint: disable=unexpected-keyword-arg
    with pytest.raises(AttributeError):
        cfg.set_name = "x"  # a run never changes its options; replace() makes a new config
    assert cfg.replace(set_name="S").set_name == "S" and cfg.set_name == "latest"
