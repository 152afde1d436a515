"""matrix.stack.matrix_user / matrix_user_info against a real Synapse on real PostgreSQL, run through Ansible."""

import json
import secrets
import sys
from pathlib import Path

import pytest
import yaml

from helpers import matrix_client as mc

pytestmark = [pytest.mark.integration, pytest.mark.synapse, pytest.mark.slow]

PYTHON = sys.executable if "venv" in sys.executable else str(Path(__file__).resolve().parents[2] / ".work/venv/bin/python")


@pytest.fixture(scope="module")
def synapse(synapse_factory):
    # bcrypt_rounds 4 keeps password hashing cheap; everything else is Synapse's default behaviour.
    return synapse_factory(server_name="users.test", extra_config={"bcrypt_rounds": 4})


@pytest.fixture(scope="module")
def admin_token(synapse):
    """A separate admin for verification calls (not the one the module bootstraps)."""
    return mc.register_shared_secret(synapse.base_url, synapse.registration_shared_secret, "verifier",
                                     secrets.token_urlsafe(12), admin=True)["access_token"]


def get_user(synapse, token, user_id):
    try:
        return mc.request(synapse.base_url, "GET", "/_synapse/admin/v2/users/" + user_id, token)
    except mc.MatrixError as exc:
        if exc.status == 404:
            return None
        raise


def can_login(synapse, user, password):
    try:
        mc.login(synapse.base_url, user, password)
        return True
    except mc.MatrixError as exc:
        if exc.status == 403:
            return False
        raise


class Play:
    """Write a playbook of tasks, run it through ansible-playbook with the json callback."""

    def __init__(self, run_playbook, tmp_path, synapse):
        self.run_playbook = run_playbook
        self.tmp_path = tmp_path
        self.synapse = synapse
        self.count = 0

    def __call__(self, tasks, check=False, diff=False, verbosity=0, extra_vars=None, json_output=True):
        self.count += 1
        path = self.tmp_path / ("play%d.yml" % self.count)
        path.write_text(yaml.safe_dump([{"name": "matrix_user test", "hosts": "localhost", "gather_facts": False,
                                         "tasks": tasks}], sort_keys=False))
        ev = {"ansible_python_interpreter": PYTHON, "hs": self.synapse.base_url,
              "shared_secret": self.synapse.registration_shared_secret}
        ev.update(extra_vars or {})
        result = self.run_playbook(path, extra_vars=ev, check=check, diff=diff, verbosity=verbosity,
                                   json_output=json_output)
        if json_output:
            result.tasks = [t["hosts"]["localhost"] for t in result.results["plays"][0]["tasks"]]
        return result


@pytest.fixture
def play(run_playbook, tmp_path, synapse):
    return Play(run_playbook, tmp_path, synapse)


def mu(**args):
    return {"matrix.stack.matrix_user": dict({"homeserver_url": "{{ hs }}", "admin_token": "{{ token }}"}, **args)}


def task(name, module, **extra):
    return dict({"name": name}, **module, **extra)


def test_bootstrap_admin_with_shared_secret_then_login(play, synapse):
    password = secrets.token_urlsafe(16)
    boot = {"matrix.stack.matrix_user": {
        "homeserver_url": "{{ hs }}", "registration_shared_secret": "{{ shared_secret }}", "user": "boss",
        "password": password, "admin": True, "displayname": "The Boss", "return_access_token": True}}
    res = play([task("bootstrap", boot, register="boot", no_log=True),
                task("bootstrap again", boot, register="boot2", no_log=True),
                {"name": "expose for the test", "ansible.builtin.set_fact": {
                    "out": {"b1": "{{ boot | dict2items | rejectattr('key', 'eq', 'access_token') | items2dict }}",
                            "b2": "{{ boot2 | dict2items | rejectattr('key', 'eq', 'access_token') | items2dict }}",
                            "t1": "{{ boot.access_token | length }}", "same": "{{ boot.access_token == boot2.access_token }}"}}},
                {"name": "whoami with the token", "ansible.builtin.uri": {
                    "url": "{{ hs }}/_matrix/client/v3/account/whoami",
                    "headers": {"Authorization": "Bearer {{ boot.access_token }}"}}, "register": "who",
                 "no_log": True},
                {"name": "out", "ansible.builtin.debug": {"msg": "{{ out | combine({'who': who.json.user_id}) }}"}}])
    assert res.rc == 0, res.stdout[-3000:]
    out = res.tasks[-1]["msg"]
    assert out["b1"]["changed"] is True and out["b1"]["created"] is True
    assert out["b1"]["bootstrapped"] == "registered"
    assert out["b1"]["user"]["admin"] is True and out["b1"]["user"]["displayname"] == "The Boss"
    assert out["b2"]["bootstrapped"] == "logged_in" and out["b2"]["changed"] is False
    assert int(out["t1"]) > 10 and out["same"] in (False, "False")
    assert out["who"] == "@boss:users.test"
    assert password not in res.stdout


def test_lifecycle_each_field(play, synapse, admin_token):
    pw1, pw2, pw3, pw4 = (secrets.token_urlsafe(12) for _i in range(4))
    uid = "@alice:users.test"
    ev = {"token": admin_token}

    res = play([
        task("create", mu(user="alice", password=pw1, displayname="Alice", emails=["Alice.Smith@Example.ORG"]),
             register="r"),
        task("again", mu(user="@alice:users.test", password=pw1, displayname="Alice",
                         emails=["alice.smith@example.org"])),
        task("again, other case in the address", mu(user="alice", emails=["ALICE.SMITH@example.org"])),
    ], extra_vars=ev)
    assert res.rc == 0, res.stdout[-3000:]
    assert [t["changed"] for t in res.tasks] == [True, False, False]
    assert res.tasks[0]["created"] is True and res.tasks[0]["user_id"] == uid
    user = get_user(synapse, admin_token, uid)
    assert user["displayname"] == "Alice" and not user["admin"] and not user["locked"]
    assert [t["address"] for t in user["threepids"]] == ["alice.smith@example.org"]
    assert can_login(synapse, "alice", pw1)

    # each field, one task each, then the same again (no change)
    steps = [
        dict(displayname="Alice S."),
        dict(emails=["alice@example.org", "a.smith@example.net"]),
        dict(user_type="bot"),
        dict(user_type=""),
        dict(admin=True),
        dict(admin=False),
        dict(locked=True),
        dict(locked=False),
    ]
    tasks = []
    for step in steps:
        tasks.append(task("set %s" % step, mu(user="alice", **step)))
        tasks.append(task("re-set %s" % step, mu(user="alice", **step)))
        tasks.append({"name": "read", "matrix.stack.matrix_user_info": {
            "homeserver_url": "{{ hs }}", "admin_token": "{{ token }}", "user": "alice"}})
    res = play(tasks, extra_vars=ev)
    assert res.rc == 0, res.stdout[-3000:]
    reads = res.tasks[2::3]
    assert [t["changed"] for t in res.tasks[0::3]] == [True] * len(steps)
    assert [t["changed"] for t in res.tasks[1::3]] == [False] * len(steps)
    assert reads[0]["user"]["displayname"] == "Alice S."
    assert reads[1]["user"]["emails"] == ["a.smith@example.net", "alice@example.org"]
    assert reads[2]["user"]["user_type"] == "bot"
    assert reads[3]["user"]["user_type"] is None
    assert reads[4]["user"]["admin"] is True
    assert reads[5]["user"]["admin"] is False
    assert reads[6]["user"]["locked"] is True
    assert reads[7]["user"]["locked"] is False

    # passwords: always changes it (and it logs in); on_create leaves it alone
    res = play([
        task("always", mu(user="alice", password=pw2, update_password="always")),
        task("on_create", mu(user="alice", password=pw3, update_password="on_create")),
    ], extra_vars=ev)
    assert res.rc == 0, res.stdout[-3000:]
    assert [t["changed"] for t in res.tasks] == [True, False]
    assert can_login(synapse, "alice", pw2)
    assert not can_login(synapse, "alice", pw1)
    assert not can_login(synapse, "alice", pw3)

    # deactivate (reversible), reactivate with a new password, erase
    res = play([
        task("deactivate", mu(user="alice", state="deactivated")),
        task("deactivate again", mu(user="alice", state="deactivated")),
        task("reactivate without password", mu(user="alice"), ignore_errors=True),
    ], extra_vars=ev)
    assert [t["changed"] for t in res.tasks[:2]] == [True, False]
    assert res.tasks[2]["failed"] is True and "needs a new password" in res.tasks[2]["msg"]
    user = get_user(synapse, admin_token, uid)
    assert user["deactivated"] is True and user["erased"] is False
    assert not can_login(synapse, "alice", pw2)

    res = play([task("reactivate", mu(user="alice", password=pw4)),
                task("again", mu(user="alice", password=pw4))], extra_vars=ev)
    assert res.rc == 0, res.stdout[-3000:]
    assert [t["changed"] for t in res.tasks] == [True, False]
    assert get_user(synapse, admin_token, uid)["deactivated"] is False
    assert can_login(synapse, "alice", pw4)

    res = play([task("erase", mu(user="alice", state="absent")),
                task("erase again", mu(user="alice", state="absent")),
                task("absent user that never existed", mu(user="nobody-here", state="absent"))], extra_vars=ev)
    assert res.rc == 0, res.stdout[-3000:]
    assert [t["changed"] for t in res.tasks] == [True, False, False]
    user = get_user(synapse, admin_token, uid)
    assert user["deactivated"] is True and user["erased"] is True
    assert get_user(synapse, admin_token, "@nobody-here:users.test") is None


def test_check_mode_changes_nothing_and_diff(play, synapse, admin_token):
    ev = {"token": admin_token}
    res = play([task("create bob", mu(user="bob", displayname="Bob", emails=["bob@example.org"]))], extra_vars=ev)
    assert res.rc == 0
    before = get_user(synapse, admin_token, "@bob:users.test")

    res = play([
        task("change in check mode", mu(user="bob", displayname="Robert", admin=True, locked=True,
                                        emails=["robert@example.org"], password="x-secret-x",
                                        update_password="always")),
        task("create in check mode", mu(user="carol", displayname="Carol")),
        task("deactivate in check mode", mu(user="bob", state="deactivated")),
        task("erase in check mode", mu(user="bob", state="absent")),
    ], check=True, diff=True, extra_vars=ev)
    assert res.rc == 0, res.stdout[-3000:]
    assert [t["changed"] for t in res.tasks] == [True, True, True, True]
    assert get_user(synapse, admin_token, "@bob:users.test") == before
    assert get_user(synapse, admin_token, "@carol:users.test") is None

    diff = res.tasks[0]["diff"]
    assert diff["before"]["displayname"] == "Bob" and diff["after"]["displayname"] == "Robert"
    assert diff["before"]["admin"] is False and diff["after"]["admin"] is True
    assert diff["before"]["locked"] is False and diff["after"]["locked"] is True
    assert diff["before"]["emails"] == ["bob@example.org"] and diff["after"]["emails"] == ["robert@example.org"]
    assert diff["after"]["password_updated"] is True
    assert "x-secret-x" not in json.dumps(res.tasks) and "x-secret-x" not in res.stdout
    assert res.tasks[1]["diff"]["before"] == {"exists": False}
    assert res.tasks[1]["diff"]["after"]["displayname"] == "Carol"
    assert res.tasks[2]["diff"]["after"]["deactivated"] is True
    assert res.tasks[3]["diff"]["after"]["erased"] is True

    # the text diff Ansible prints
    res = play([task("real change", mu(user="bob", displayname="Bobby"))], diff=True, extra_vars=ev,
               json_output=False)
    assert res.rc == 0
    assert '-    "displayname": "Bob",' in res.stdout and '+    "displayname": "Bobby",' in res.stdout


def test_bulk_200_users_then_noop(play, synapse, admin_token):
    users = [{"user": "bulk%03d" % i, "displayname": "Bulk %d" % i} for i in range(200)]
    users[0]["emails"] = ["bulk0@example.org"]
    users[1]["admin"] = True
    tasks = [task("bulk", mu(users="{{ bulk }}"), register="r", no_log=True),
             {"name": "summary", "ansible.builtin.debug": {"msg": "{{ {'summary': r.summary, 'http': r.http, "
                                                                  "'first': r.results[0]} }}"}}]
    res = play(tasks, extra_vars={"token": admin_token, "bulk": users})
    assert res.rc == 0, res.stdout[-3000:]
    out = res.tasks[-1]["msg"]
    assert out["summary"]["created"] == 200 and out["summary"]["changed"] == 200
    assert out["first"]["user"]["emails"] == ["bulk0@example.org"]
    assert get_user(synapse, admin_token, "@bulk001:users.test")["admin"] is True
    assert get_user(synapse, admin_token, "@bulk199:users.test")["displayname"] == "Bulk 199"

    res = play(tasks, extra_vars={"token": admin_token, "bulk": users})
    assert res.rc == 0, res.stdout[-3000:]
    out = res.tasks[-1]["msg"]
    assert out["summary"] == {"total": 200, "changed": 0, "created": 0, "unchanged": 200, "failed": 0}
    assert res.stats["localhost"]["changed"] == 0
    # one listing (+ whoami) and one GET for the user with e-mails, not 200 GETs
    assert out["http"]["requests"] <= 5

    # a mixed bulk run: one change, one erase, per-user results
    users[5]["displayname"] = "Changed"
    users[6]["state"] = "absent"
    res = play([task("bulk", mu(users="{{ bulk }}"), register="r", no_log=True),
                {"name": "summary", "ansible.builtin.debug": {
                    "msg": "{{ r.results | selectattr('changed') | map(attribute='user_id') | list }}"}}],
               extra_vars={"token": admin_token, "bulk": users})
    assert res.rc == 0
    assert res.tasks[-1]["msg"] == ["@bulk005:users.test", "@bulk006:users.test"]


def test_user_info_pagination_and_filters(play, synapse, admin_token):
    for i in range(130):
        mc.request(synapse.base_url, "PUT", "/_synapse/admin/v2/users/@page%03d:users.test" % i, admin_token,
                   {"displayname": "Pager %d" % i, "admin": i % 50 == 0})
    mc.request(synapse.base_url, "POST", "/_synapse/admin/v1/deactivate/@page007:users.test", admin_token,
               {"erase": False})
    info = {"homeserver_url": "{{ hs }}", "admin_token": "{{ token }}"}
    res = play([
        {"name": "all", "matrix.stack.matrix_user_info": dict(info, page_size=25, name="page")},
        {"name": "admins", "matrix.stack.matrix_user_info": dict(info, name="page", admins=True)},
        {"name": "deactivated", "matrix.stack.matrix_user_info": dict(info, name="page", deactivated=True)},
        {"name": "active", "matrix.stack.matrix_user_info": dict(info, name="page", deactivated=False)},
        {"name": "display name", "matrix.stack.matrix_user_info": dict(info, name="Pager 12")},
        {"name": "no guests", "matrix.stack.matrix_user_info": dict(info, guests=False, name="page")},
        {"name": "one user", "matrix.stack.matrix_user_info": dict(info, user="page000")},
        {"name": "missing user", "matrix.stack.matrix_user_info": dict(info, user="page999")},
    ], extra_vars={"token": admin_token})
    assert res.rc == 0, res.stdout[-3000:]
    everything, admins, deactivated, active, by_name, no_guests, one, missing = res.tasks
    assert everything["total"] == 130 and everything["pages"] == 6
    assert len({u["name"] for u in everything["users"]}) == 130
    assert sorted(u["name"] for u in admins["users"]) == [
        "@page000:users.test", "@page050:users.test", "@page100:users.test"]
    assert [u["name"] for u in deactivated["users"]] == ["@page007:users.test"]
    assert active["total"] == 129
    assert sorted(u["name"] for u in by_name["users"]) == ["@page012:users.test"] + [
        "@page%03d:users.test" % i for i in range(120, 130)]
    assert no_guests["total"] == 130
    assert one["exists"] is True and one["user"]["admin"] is True
    assert one["user"]["joined_rooms_count"] == 0 and one["user"]["devices_count"] == 0
    assert missing["exists"] is False and "user" not in missing


def test_user_info_counts_rooms_and_devices(play, synapse, admin_token):
    password = secrets.token_urlsafe(12)
    mc.request(synapse.base_url, "PUT", "/_synapse/admin/v2/users/@roomy:users.test", admin_token,
               {"password": password})
    token = mc.login(synapse.base_url, "roomy", password)["access_token"]
    mc.login(synapse.base_url, "roomy", password)
    room = mc.create_room(synapse.base_url, token, "r1")
    res = play([{"name": "one", "matrix.stack.matrix_user_info": {
        "homeserver_url": "{{ hs }}", "admin_token": "{{ token }}", "user": "@roomy:users.test"}}],
        extra_vars={"token": admin_token})
    assert res.rc == 0
    user = res.tasks[0]["user"]
    assert user["joined_rooms"] == [room] and user["joined_rooms_count"] == 1 and user["devices_count"] == 2


@pytest.mark.parametrize("case", ["bad_localpart", "unknown_server", "wrong_token", "non_admin", "unreachable",
                                  "bad_email"])
def test_errors_are_clear_and_change_nothing(play, synapse, admin_token, case):
    password = secrets.token_urlsafe(12)
    mc.request(synapse.base_url, "PUT", "/_synapse/admin/v2/users/@plain:users.test", admin_token,
               {"password": password})
    plain_token = mc.login(synapse.base_url, "plain", password)["access_token"]
    args = {"user": "erruser", "displayname": "Err"}
    ev = {"token": admin_token}
    expected = {
        "bad_localpart": "not a valid Matrix user ID localpart",
        "unknown_server": "belongs to server 'elsewhere.example'",
        "wrong_token": "access token was rejected",
        "non_admin": "does not belong to a server admin",
        "unreachable": "Cannot reach the homeserver",
        "bad_email": "not a valid e-mail address",
    }[case]
    if case == "bad_localpart":
        args["user"] = "Err User"
    elif case == "unknown_server":
        args["user"] = "@erruser:elsewhere.example"
    elif case == "wrong_token":
        ev["token"] = "syt_not_a_real_token"
    elif case == "non_admin":
        ev["token"] = plain_token
    elif case == "unreachable":
        from helpers.services import free_port  # pylint: disable=import-outside-toplevel
        ev["hs"] = "http://127.0.0.1:%d" % free_port()
        args["retries"] = 1
    elif case == "bad_email":
        args["emails"] = ["not-an-address"]
    users_before = mc.request(synapse.base_url, "GET", "/_synapse/admin/v2/users?limit=1000&deactivated=true",
                              admin_token)["total"]
    res = play([task("fail", mu(**args), ignore_errors=True),
                task("fail in bulk", mu(users=[{"user": args["user"], "emails": args.get("emails")},
                                               {"user": "errother"}],
                                        **{k: v for k, v in args.items() if k not in ("user", "displayname", "emails")}),
                     ignore_errors=True)], extra_vars=ev)
    for result in res.tasks:
        assert result["failed"] is True
        assert expected in result["msg"], result["msg"]
        assert result.get("changed") is False
    assert get_user(synapse, admin_token, "@erruser:users.test") is None
    assert get_user(synapse, admin_token, "@errother:users.test") is None
    assert mc.request(synapse.base_url, "GET", "/_synapse/admin/v2/users?limit=1000&deactivated=true",
                      admin_token)["total"] == users_before


def test_no_secret_in_vvv_output(play, synapse):
    password = secrets.token_urlsafe(16)
    user_password = secrets.token_urlsafe(16)
    boot = {"homeserver_url": "{{ hs }}", "registration_shared_secret": "{{ shared_secret }}", "user": "vvvadmin",
            "password": "{{ pw }}", "return_access_token": True}
    res = play([
        # no task-level no_log: the action plugin hides a result that carries a token
        {"name": "bootstrap", "matrix.stack.matrix_user": boot, "register": "boot"},
        {"name": "use the token", "matrix.stack.matrix_user": {
            "homeserver_url": "{{ hs }}", "admin_token": "{{ boot.access_token }}", "user": "vvvuser",
            "password": "{{ upw }}", "update_password": "always"}},
        {"name": "bulk with passwords", "matrix.stack.matrix_user": {
            "homeserver_url": "{{ hs }}", "admin_token": "{{ boot.access_token }}",
            "users": [{"user": "vvvuser2", "password": "{{ upw }}"}]}},
        {"name": "bootstrap by login (existing user)", "matrix.stack.matrix_user": dict(boot, return_access_token=False)},
        {"name": "keep the token for the test", "ansible.builtin.copy": {
            "content": "{{ boot.access_token }}", "dest": "{{ tokfile }}", "mode": "0600"}, "no_log": True},
    ], verbosity=3, json_output=False,
        extra_vars={"pw": password, "upw": user_password, "tokfile": str(play.tmp_path / "tok")})
    assert res.rc == 0, res.stdout[-3000:]
    token = (play.tmp_path / "tok").read_text()
    assert len(token) > 10
    for secret in (password, user_password, token, synapse.registration_shared_secret):
        assert secret not in res.stdout and secret not in res.stderr
    assert "********" in res.stdout or "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in res.stdout
    assert "the output has been hidden due to the fact that 'no_log: true' was specified" in res.stdout


def test_login_rate_limit_429_is_retried(synapse_factory, run_playbook, tmp_path):
    """A Synapse with tight login rate limits: the bootstrap login gets a real 429 and waits it out."""
    tight = {"per_second": 0.1, "burst_count": 1}
    limited = synapse_factory(server_name="limited.test", extra_config={
        "bcrypt_rounds": 4, "rc_login": {"address": tight, "account": tight,
                                         "failed_attempts": {"per_second": 1000, "burst_count": 1000}}})
    password = secrets.token_urlsafe(12)
    mc.register_shared_secret(limited.base_url, limited.registration_shared_secret, "rladmin", password, admin=True)
    mc.login(limited.base_url, "rladmin", password)  # uses the one-login burst
    with pytest.raises(mc.MatrixError) as info:  # proves the limit is really on
        mc.login(limited.base_url, "rladmin", password)
    assert info.value.status == 429 and "retry_after_ms" in info.value.body

    play = Play(run_playbook, tmp_path, limited)
    boot = {"homeserver_url": "{{ hs }}", "registration_shared_secret": "{{ shared_secret }}", "user": "rladmin",
            "password": "{{ pw }}"}
    res = play([{"name": "bootstrap by login", "matrix.stack.matrix_user": boot},
                {"name": "no patience", "matrix.stack.matrix_user": dict(boot, max_retry_wait=0.01),
                 "ignore_errors": True}],
               extra_vars={"pw": password})
    ok, impatient = res.tasks
    assert ok.get("failed") is not True, ok
    assert ok["bootstrapped"] == "logged_in"
    assert any(r["reason"] == "429 rate limited" and r["waited"] > 0.5 for r in ok["http"]["retries"]), ok["http"]
    assert impatient["failed"] is True and "more than max_retry_wait" in impatient["msg"]
    assert password not in res.stdout
