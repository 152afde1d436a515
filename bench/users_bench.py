"""Benchmark matrix.stack.matrix_user in bulk against its floor.

1. floor:   a plain Python loop of PUT /_synapse/admin/v2/users/<id> over one requests.Session
2. create:  one `matrix.stack.matrix_user` task with `users:` of N new users (ansible-playbook)
3. no-op:   the same task again (nothing to change)

Prints the create/floor ratio (aim <= 1.2) and the no-op/create ratio (aim < 0.10), measured both on
the task's own duration (ansible.posix.json callback) and on the whole ansible-playbook process.

By default it starts a throwaway PostgreSQL and Synapse on 127.0.0.1 (the test helpers) and stops
them at the end; or point it at a server with --homeserver-url and --admin-token.
Users are created without a password by default: a password costs a bcrypt hash in Synapse for
both sides and hides the module's own overhead; --with-password adds one.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VENV_BIN = REPO / ".work" / "venv" / "bin"
COLLECTIONS = REPO / ".work" / "collections"


def floor_loop(base_url, token, server_name, prefix, count, password):
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + token
    start = time.perf_counter()
    for i in range(count):
        body = {"displayname": "Bench user %d" % i}
        if password:
            body["password"] = password
        resp = session.put("%s/_synapse/admin/v2/users/@%s%d:%s" % (base_url, prefix, i, server_name), json=body,
                           timeout=30)
        if resp.status_code != 201:
            raise SystemExit("floor: unexpected HTTP %s: %s" % (resp.status_code, resp.text[:200]))
    elapsed = time.perf_counter() - start
    session.close()
    return elapsed


def run_task(workdir, base_url, token, prefix, count, password):
    users = [{"user": "%s%d" % (prefix, i), "displayname": "Bench user %d" % i} for i in range(count)]
    if password:
        for u in users:
            u["password"] = password
    varsfile = Path(workdir) / ("vars-%s.json" % prefix)
    varsfile.write_text(json.dumps({"bench_users": users, "bench_url": base_url, "bench_token": token}))
    varsfile.chmod(0o600)
    playbook = Path(workdir) / "bench.yml"
    playbook.write_text("""
- name: Bench matrix_user
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Users in one task
      matrix.stack.matrix_user:
        homeserver_url: "{{ bench_url }}"
        admin_token: "{{ bench_token }}"
        users: "{{ bench_users }}"
      register: bench_result
      no_log: true
    - name: Summary
      ansible.builtin.debug:
        msg: "{{ {'summary': bench_result.summary, 'requests': bench_result.http.requests} }}"
""")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook),
            "-e", "@" + str(varsfile), "-e", "ansible_python_interpreter=" + str(VENV_BIN / "python")]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit("ansible-playbook failed (rc=%d):\n%s\n%s" % (proc.returncode, proc.stdout[-3000:],
                                                                       proc.stderr[-3000:]))
    doc = json.loads(proc.stdout)
    task = doc["plays"][0]["tasks"][0]
    duration = task["task"]["duration"]
    t0 = _ts(duration["start"])
    t1 = _ts(duration["end"])
    summary = doc["plays"][0]["tasks"][1]["hosts"]["localhost"]["msg"]
    return t1 - t0, wall, summary


def _ts(value):
    from datetime import datetime  # pylint: disable=import-outside-toplevel
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--homeserver-url")
    parser.add_argument("--admin-token", help="or the MATRIX_ADMIN_TOKEN environment variable")
    parser.add_argument("--server-name")
    parser.add_argument("--with-password", action="store_true", help="create users with a password (bcrypt)")
    parser.add_argument("--bcrypt-rounds", type=int, default=12, help="bcrypt_rounds of the throwaway Synapse")
    parser.add_argument("--sqlite", action="store_true", help="throwaway Synapse on SQLite instead of PostgreSQL")
    args = parser.parse_args()

    started = []
    try:
        if args.homeserver_url:
            base_url = args.homeserver_url.rstrip("/")
            token = args.admin_token or os.environ.get("MATRIX_ADMIN_TOKEN")
            if not token:
                raise SystemExit("--admin-token or MATRIX_ADMIN_TOKEN is needed with --homeserver-url")
            server_name = args.server_name or requests.get(
                base_url + "/_matrix/client/v3/account/whoami", headers={"Authorization": "Bearer " + token},
                timeout=30).json()["user_id"].split(":", 1)[1]
        else:
            from tests.helpers.services import PostgresServer, SynapseServer  # pylint: disable=import-outside-toplevel
            from tests.helpers.matrix_client import register_shared_secret  # pylint: disable=import-outside-toplevel
            postgres = None
            if not args.sqlite:
                postgres = PostgresServer().start()
                started.append(postgres)
            root = tempfile.mkdtemp(prefix="matrix-stack-bench-")
            synapse = SynapseServer("bench.local", root, postgres=postgres,
                                    database="sqlite" if args.sqlite else "postgres",
                                    extra_config={"bcrypt_rounds": args.bcrypt_rounds})
            synapse.start()
            started.insert(0, synapse)
            base_url, server_name = synapse.base_url, synapse.server_name
            token = register_shared_secret(base_url, synapse.registration_shared_secret, "benchadmin",
                                           "bench-admin-password", admin=True)["access_token"]
        password = "bench-password-1" if args.with_password else None
        stamp = "%x" % int(time.time())
        print("homeserver %s, %d users, passwords: %s" % (base_url, args.count, "yes" if password else "no"))

        with tempfile.TemporaryDirectory(prefix="matrix-stack-bench-") as workdir:
            # floor, module, floor again: the machine's load drifts, so the floor brackets the module run
            floor1 = floor_loop(base_url, token, server_name, "floora%s-" % stamp, args.count, password)
            print("floor (requests.Session PUT loop): %8.2f s  (%.1f ms per user)" % (floor1, 1000 * floor1 / args.count))
            create_task, create_wall, create_summary = run_task(workdir, base_url, token, "mod%s-" % stamp,
                                                                args.count, password)
            print("matrix_user create: task %8.2f s, ansible-playbook %8.2f s  %s"
                  % (create_task, create_wall, create_summary))
            floor2 = floor_loop(base_url, token, server_name, "floorb%s-" % stamp, args.count, password)
            print("floor again:                       %8.2f s  (%.1f ms per user)" % (floor2, 1000 * floor2 / args.count))
            floor = (floor1 + floor2) / 2
            noop_task, noop_wall, noop_summary = run_task(workdir, base_url, token, "mod%s-" % stamp,
                                                          args.count, password)
            print("matrix_user no-op:  task %8.2f s, ansible-playbook %8.2f s  %s"
                  % (noop_task, noop_wall, noop_summary))
            if create_summary["summary"]["created"] != args.count or noop_summary["summary"]["changed"] != 0:
                raise SystemExit("unexpected results: create %s, no-op %s" % (create_summary, noop_summary))
        print()
        print("floor (mean of the two loops): %.2f s" % floor)
        print("create / floor   : %.3f (task)  %.3f (whole ansible-playbook)   aim <= 1.2"
              % (create_task / floor, create_wall / floor))
        print("no-op  / create  : %.3f (task)  %.3f (whole ansible-playbook)   aim <  0.10"
              % (noop_task / create_task, noop_wall / create_wall))
    finally:
        for service in started:
            if hasattr(service, "destroy"):
                service.destroy()
            else:
                service.stop()


if __name__ == "__main__":
    main()
