"""Synapse's memory with and without jemalloc preloaded (synapse_jemalloc_enabled).

Starts the real Synapse (the test venv, .work/venv-synapse) on a throwaway PostgreSQL on 127.0.0.1, once
with LD_PRELOAD=/usr/$LIB/libjemalloc.so.2 (what the rendered Deployment sets; Debian's libjemalloc2)
and once without, alternating for --rounds rounds. Each run: start, wait for /health, record RSS; then a
workload (users registered, rooms created, messages sent, /sync) and RSS again (VmRSS and the peak VmHWM
from /proc/<pid>/status); then --idle seconds idle and RSS once more. Prints one line per run and the
medians with the jemalloc/glibc ratio.

Measured on the 2-core test machine (Synapse 1.163.2, Debian libjemalloc2 5.3.0, load average ~15-25):
  --rounds 2 --users 15 --messages 40: jemalloc start 123 / load 134 / idle 134 MiB,
                                       glibc    start 119 / load 129 / idle 129 MiB (ratio 1.04)
  --rounds 1 --users 40 --messages 120: jemalloc start 124 / load 158 / idle 158 MiB,
                                        glibc    start 119 / load 155 / idle 155 MiB (ratio 1.02)
Short runs show no saving; upstream preloads jemalloc against fragmentation over long uptimes.
"""

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

# pylint: disable=wrong-import-position
from helpers import matrix_client  # noqa: E402
from helpers.services import PostgresServer, SynapseServer  # noqa: E402

JEMALLOC = "/usr/$LIB/libjemalloc.so.2"


def status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing for {pid}")


def workload(server, users, messages):
    for i in range(users):
        token = matrix_client.register_shared_secret(server.base_url, server.registration_shared_secret,
                                                     f"bench{i}_{secrets.token_hex(2)}", secrets.token_urlsafe(12))["access_token"]
        room = matrix_client.create_room(server.base_url, token, f"bench room {i}")
        for j in range(messages):
            matrix_client.send_message(server.base_url, token, room, f"message {j} " + "x" * 200)
        matrix_client.request(server.base_url, "GET", "/_matrix/client/v3/sync?timeout=0", token=token)
        matrix_client.messages(server.base_url, token, room, limit=messages)


def run(postgres, root, jemalloc, args):
    server = SynapseServer("bench.local", root, postgres=postgres)
    saved = os.environ.pop("LD_PRELOAD", None)
    if jemalloc:
        os.environ["LD_PRELOAD"] = JEMALLOC
    try:
        server.start(timeout=300)
    finally:
        os.environ.pop("LD_PRELOAD", None)
        if saved is not None:
            os.environ["LD_PRELOAD"] = saved
    try:
        pid = server.proc.pid
        mapped = "libjemalloc" in Path(f"/proc/{pid}/maps").read_text()
        if mapped != jemalloc:
            raise RuntimeError(f"jemalloc mapped={mapped}, wanted {jemalloc}")
        time.sleep(2)
        result = {"start": status_kib(pid, "VmRSS")}
        workload(server, args.users, args.messages)
        result["load"] = status_kib(pid, "VmRSS")
        result["peak"] = status_kib(pid, "VmHWM")
        time.sleep(args.idle)
        result["idle"] = status_kib(pid, "VmRSS")
        return result
    finally:
        server.destroy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--idle", type=int, default=15)
    args = parser.parse_args()
    postgres = PostgresServer().start()
    results = {True: [], False: []}
    try:
        with tempfile.TemporaryDirectory(prefix="jemalloc-bench-") as tmp:
            for r in range(args.rounds):
                for jemalloc in (True, False) if r % 2 == 0 else (False, True):
                    res = run(postgres, Path(tmp) / f"r{r}-{int(jemalloc)}", jemalloc, args)
                    results[jemalloc].append(res)
                    print(f"round {r} {'jemalloc' if jemalloc else 'glibc   '}: "
                          + " ".join(f"{k}={v / 1024:.0f}MiB" for k, v in res.items()), flush=True)
    finally:
        postgres.stop()
    for key in ("start", "load", "peak", "idle"):
        jem = statistics.median(r[key] for r in results[True]) / 1024
        glibc = statistics.median(r[key] for r in results[False]) / 1024
        print(f"median {key:5}: jemalloc {jem:.0f} MiB, glibc {glibc:.0f} MiB, ratio {jem / glibc:.2f}")


if __name__ == "__main__":
    main()
