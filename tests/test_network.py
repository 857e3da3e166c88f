"""The network policy against a real listener on another host (a network namespace with a
veth pair, made here): every path Python code can take is refused before anything reaches
the listener, and `depfakes offline` covers what Python cannot see (subprocesses)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.servers import network_host

pytestmark = pytest.mark.serial  # a network namespace and fixed addresses of the host

HOST_IP = "10.231.9.2"

LISTENER = textwrap.dedent("""
    import socket, sys, threading, time
    log = open(sys.argv[1], "a", buffering=1)
    tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", 8080)); tcp.listen(16)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("0.0.0.0", 9999))
    def tcp_loop():
        while True:
            conn, peer = tcp.accept(); log.write(f"tcp {peer}\\n"); conn.close()
    def udp_loop():
        while True:
            data, peer = udp.recvfrom(100); log.write(f"udp {peer}\\n")
    for loop in (tcp_loop, udp_loop):
        threading.Thread(target=loop, daemon=True).start()
    print("ready", flush=True)
    time.sleep(float(sys.argv[2]))  # bounded: stops by itself
""")


@pytest.fixture
def listener(tmp_path):
    """A TCP (8080) and UDP (9999) listener on another host; yields its log file."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run as root with iproute2 (network namespaces)")
        pytest.skip("needs root and iproute2 for a network namespace")
    log = tmp_path / "reached"
    log.touch()
    with network_host("dfk-net", "10.231.9.1", HOST_IP) as on_host:
        proc = on_host.popen([sys.executable, "-c", LISTENER, str(log), "120"],
                             cwd=tmp_path, env={})
        try:
            assert proc.stdout.readline().strip() == "ready"
            yield log
        finally:
            proc.kill()
            proc.wait()


POLICY_TESTS = f"""
    import _socket, socket
    import psycopg
    import pytest
    from depfakes.network import LookupRefused, NetworkRefused

    pytestmark = pytest.mark.deps("http")
    HOST = {HOST_IP!r}

    def test_tcp_connect():
        # create_connection looks the address up first: refused there, or at connect.
        with pytest.raises((NetworkRefused, LookupRefused),
                           match="network access to " + HOST + ":8080"):
            socket.create_connection((HOST, 8080), timeout=3)
        with pytest.raises(NetworkRefused, match="network access to " + HOST + ":8080"):
            socket.socket().connect((HOST, 8080))

    def test_udp_sendto():
        with pytest.raises(NetworkRefused):
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", (HOST, 9999))

    def test_udp_sendmsg():
        with pytest.raises(NetworkRefused):
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendmsg([b"x"], [], 0, (HOST, 9999))

    def test_tcp_fast_open():
        with pytest.raises(NetworkRefused):
            socket.socket().sendto(b"GET /", socket.MSG_FASTOPEN, (HOST, 8080))

    def test_the_c_socket_class_itself():
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        with pytest.raises(NetworkRefused):
            sock.connect((HOST, 8080))
        sock.close()

    def test_dns_lookups():
        for lookup in (socket.gethostbyname, socket.gethostbyname_ex,
                       lambda name: socket.getaddrinfo(name, 80)):
            with pytest.raises(LookupRefused):
                lookup("api.example.com")

    def test_localhost_names_never_reach_dns():
        for info in socket.getaddrinfo("evil.localhost", 80):
            assert info[4][0] in ("127.0.0.1", "::1")

    def test_libpq_is_checked_before_it_connects():
        with pytest.raises(NetworkRefused, match=HOST):
            psycopg.connect(f"host={{HOST}} port=8080 connect_timeout=3")
        with pytest.raises(NetworkRefused, match=HOST):
            psycopg.connect(host=HOST, port=8080, connect_timeout=3, autocommit=True)

    def test_loopback_and_unix_sockets_still_work():
        server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
        socket.create_connection(server.getsockname(), timeout=3).close()
        a, b = socket.socketpair(); a.sendall(b"x"); assert b.recv(1) == b"x"
"""


def test_every_python_path_is_refused_before_it_reaches_the_host(listener, project, pytester):
    project(POLICY_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=9)
    time.sleep(0.5)
    assert listener.read_text() == "", "something reached the other host"
    # The listener does answer when no policy is active: the checks above could fail.
    undeclared = pytester.path / "test_undeclared.py"
    undeclared.write_text(textwrap.dedent(f"""
        import socket
        def test_reaches():
            socket.create_connection(({HOST_IP!r}, 8080), timeout=5).close()
    """))
    pytester.runpytest_subprocess("test_undeclared.py").assert_outcomes(passed=1)
    time.sleep(0.5)
    assert listener.read_text().startswith("tcp ")


def test_offline_covers_subprocesses(listener, tmp_path):
    """What Python cannot see (a subprocess, here curl or a child interpreter) is covered
    by running the session with `depfakes offline`: only loopback exists there."""
    probe = (f"import socket; socket.create_connection(({HOST_IP!r}, 8080), timeout=3)")
    direct = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30)
    assert direct.returncode == 0  # without it, a child process reaches the host
    listener.write_text("")
    offline = subprocess.run([sys.executable, "-m", "depfakes.cli", "offline", "--",
                              sys.executable, "-c", f"import subprocess, sys; "
                              f"sys.exit(subprocess.call([sys.executable, '-c', {probe!r}]))"],
                             capture_output=True, text=True, timeout=30)
    assert offline.returncode != 0
    assert "unreachable" in offline.stderr.lower()
    loopback = subprocess.run([sys.executable, "-m", "depfakes.cli", "offline", "--",
                               sys.executable, "-c",
                               "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0));"
                               " s.listen(); socket.create_connection(s.getsockname())"],
                              capture_output=True, text=True, timeout=30)
    assert loopback.returncode == 0, loopback.stderr
    time.sleep(0.5)
    assert Path(listener).read_text() == ""
