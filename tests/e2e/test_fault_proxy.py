"""The fault proxy with plain sockets: three 'nodes' on 127.0.0.1..3, each an echo
server behind a proxy route; clients bind to a node's IP as Rill's inter-node
connections do. No broker needed."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from fault_proxy import FaultProxy

pytestmark = pytest.mark.cluster

NODES = (1, 2, 3)


def ip(node: int) -> str:
    return f"127.0.0.{node}"


class EchoServer:
    """Echoes every byte back; one thread per connection, stopped by close()."""

    def __init__(self, host: str):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.addr = self.sock.getsockname()
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    def _echo(self, c):
        with c:
            c.settimeout(0.2)
            while not self.stopping.is_set():
                try:
                    data = c.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                c.sendall(data)

    def close(self):
        self.stopping.set()
        self.sock.close()


@pytest.fixture
def mesh():
    """Echo servers on 127.0.0.1..3 and a proxy route into each, sources told by IP."""
    servers = {n: EchoServer(ip(n)) for n in NODES}
    proxy = FaultProxy(source_ips={ip(n): n for n in NODES})
    routes = {n: proxy.add_route((ip(n), 0), servers[n].addr, dest=n) for n in NODES}
    yield proxy, routes
    proxy.stop()
    for s in servers.values():
        s.close()


def dial(src: int, route, timeout: float = 2.0) -> socket.socket:
    """A connection from node `src` (bound to its IP) through `route`."""
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((ip(src), 0))
    s.connect(route.listen)
    return s


def echoes(s: socket.socket, payload: bytes = b"ping") -> bool:
    """True when the payload comes back; False when the connection is cut."""
    try:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(len(payload) - len(got))
            if not chunk:
                return False
            got += chunk
        return got == payload
    except (ConnectionError, socket.timeout, OSError):
        return False


def link_works(src: int, dest: int, routes) -> bool:
    try:
        with dial(src, routes[dest]) as s:
            return echoes(s)
    except OSError:
        return False


def test_forwards_bytes_both_ways(mesh):
    proxy, routes = mesh
    with dial(1, routes[2]) as s:
        big = bytes(range(256)) * 1024
        assert echoes(s, big)
    assert all(link_works(a, b, routes) for a in NODES for b in NODES if a != b)
    assert proxy.sources_seen() == set(NODES)


def test_isolate_resets_existing_links_and_refuses_new_ones_both_ways(mesh):
    proxy, routes = mesh
    to2 = dial(1, routes[2])  # into the node that will be isolated
    from2 = dial(2, routes[3])  # out of it
    other = dial(1, routes[3])  # not involving it
    assert echoes(to2) and echoes(from2) and echoes(other)
    proxy.isolate(2)
    assert not echoes(to2)
    assert not echoes(from2)
    assert echoes(other)
    for a, b in ((1, 2), (3, 2), (2, 1), (2, 3)):
        assert not link_works(a, b, routes), f"{a}->{b} should be cut"
    assert link_works(1, 3, routes) and link_works(3, 1, routes)
    assert proxy.refused >= 4
    for s in (to2, from2, other):
        s.close()


def test_heal_restores_new_links(mesh):
    proxy, routes = mesh
    proxy.isolate(1)
    assert not link_works(2, 1, routes)
    proxy.heal()
    assert link_works(2, 1, routes) and link_works(1, 2, routes)


def test_block_cuts_one_direction_only(mesh):
    proxy, routes = mesh
    proxy.block(1, 2)
    assert not link_works(1, 2, routes)
    assert link_works(2, 1, routes)
    assert link_works(1, 3, routes)


def test_unknown_source_is_judged_by_destination(mesh):
    """A client not bound to a node IP (source 127.0.0.1 is node 1 here, so use an
    address outside the node set) still loses links into an isolated node."""
    proxy, routes = mesh
    proxy.isolate(3)

    def reaches(route) -> bool:
        # The proxy may reset a refused link before connect() even returns.
        with socket.socket() as s:
            s.settimeout(2)
            s.bind(("127.0.0.9", 0))
            try:
                s.connect(route.listen)
            except OSError:
                return False
            return echoes(s)

    assert not reaches(routes[3])
    assert reaches(routes[2])


def test_per_source_routes_identify_the_dialler():
    """For a target whose connections all come from 127.0.0.1: one route per
    (source, dest); isolating the source cuts the routes it dials."""
    server = EchoServer(ip(2))
    with FaultProxy() as proxy:
        from1 = proxy.add_route((ip(2), 0), server.addr, dest=2, source=1)
        from3 = proxy.add_route((ip(2), 0), server.addr, dest=2, source=3)
        proxy.isolate(1)
        try:
            with socket.create_connection(from1.listen, timeout=2) as s:
                assert not echoes(s)
        except OSError:
            pass  # reset before connect() returned: cut, as expected
        with socket.create_connection(from3.listen, timeout=2) as s:
            assert echoes(s)
    server.close()


def test_blackhole_freezes_and_heal_resumes():
    server = EchoServer(ip(2))
    with FaultProxy(source_ips={ip(1): 1}, mode="blackhole") as proxy:
        route = proxy.add_route((ip(2), 0), server.addr, dest=2)
        s = dial(1, route, timeout=0.5)
        assert echoes(s)
        proxy.isolate(2)
        time.sleep(0.2)
        assert not echoes(s, b"lost?")  # nothing comes back: a timeout, not a reset
        proxy.heal()
        s.settimeout(3)
        got = b""
        while len(got) < len(b"lost?"):
            got += s.recv(16)
        assert got == b"lost?"  # held, then delivered after healing
        s.close()
    server.close()


def test_stop_closes_everything(mesh):
    proxy, routes = mesh
    s = dial(1, routes[2])
    assert echoes(s)
    proxy.stop()
    assert not echoes(s)
    with pytest.raises(OSError):
        dial(1, routes[2])
    s.close()
