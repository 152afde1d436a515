"""tests/helpers/services.free_port: under pytest-xdist the two workers hand out disjoint ports."""
import socket

import pytest

from helpers.services import free_port


@pytest.mark.parametrize("worker", ["gw0", "gw1"])
def test_each_worker_takes_its_own_class_of_ports(monkeypatch, worker):
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    ports = [free_port() for _attempt in range(40)]
    assert {port % 2 for port in ports} == {int(worker[2:])}
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # and the port is really free
        sock.bind(("127.0.0.1", ports[-1]))


def test_one_process_takes_any_port(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert 1024 < free_port() <= 65535
