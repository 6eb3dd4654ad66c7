"""A loopback TCP proxy that can cut and heal links between cluster nodes.

Why a proxy and not iptables: the tests run unprivileged-style on loopback only, on
developer machines and CI alike; a proxy in the test process needs nothing installed
and only ever touches 127.0.0.0/8.

How nodes are told apart. Every route (a listening address forwarding to a target) is
the way INTO one node, its `dest`. The node a connection comes FROM is known either

  * by source IP: node i lives on 127.0.0.i and binds its outgoing inter-node
    connections to that IP (Rill does), so `source_ips={"127.0.0.i": i}` identifies it;
    or
  * by the port it dialled: a route made with `source=i` is used by node i alone (for
    a target whose outgoing connections all come from 127.0.0.1, such as a JVM, each
    node gets its own set of proxy ports in its config).

A connection whose source cannot be told is judged by its destination only.

Faults:
  isolate(n)     existing connections to or from node n are reset, new ones are
                 accepted and reset at once (the dialler sees a closed connection);
  block(a, b)    the same for the one direction a -> b (connections a opened to b);
  heal()         everything flows again (new connections; reset ones stay closed).

With mode="blackhole" the affected connections are not reset but frozen (nothing
forwarded either way) and new ones are accepted but never answered: the peers must find
out by their own timeouts, as with a silent network partition. heal() unfreezes them.

All threads are daemons and `stop()` joins them; every socket operation is bounded.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

POLL_S = 0.05
CONNECT_TIMEOUT_S = 3.0
BUF = 65536


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0) so the peer sees the cut at once."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


@dataclass(frozen=True)
class Route:
    listen: tuple[str, int]
    target: tuple[str, int]
    dest: int
    source: int | None = None  # the only node that dials this route, if known


class _Link:
    """One proxied connection: client <-> upstream, pumped by one thread."""

    def __init__(self, proxy: "FaultProxy", route: Route, client: socket.socket, src: int | None):
        self.proxy = proxy
        self.route = route
        self.client = client
        self.src = src
        self.upstream: socket.socket | None = None
        self.closed = threading.Event()

    @property
    def dest(self) -> int:
        return self.route.dest

    def close(self, reset: bool = True) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for s in (self.client, self.upstream):
            if s is not None:
                _reset(s) if reset else s.close()

    def run(self) -> None:
        try:
            if not self._wait_until_allowed():
                return
            self.upstream = socket.create_connection(self.route.target, timeout=CONNECT_TIMEOUT_S)
            self.upstream.settimeout(None)
            for s in (self.client, self.upstream):  # a transparent hop adds no Nagle delay
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pump()
        except OSError:
            pass
        finally:
            self.close(reset=False)
            self.proxy._forget(self)

    def _wait_until_allowed(self) -> bool:
        """A new connection on a cut link: reset it, or (blackhole) hold it unanswered
        until healed or stopped."""
        while not self.closed.is_set():
            verdict = self.proxy._verdict(self.src, self.dest)
            if verdict == "pass":
                return True
            if verdict == "reset":
                self.close()
                return False
            time.sleep(POLL_S)
        return False

    def _pump(self) -> None:
        peers = {self.client: self.upstream, self.upstream: self.client}
        while not self.closed.is_set():
            verdict = self.proxy._verdict(self.src, self.dest)
            if verdict == "reset":
                self.close()
                return
            if verdict == "freeze":
                time.sleep(POLL_S)
                continue
            readable, _, _ = select.select(list(peers), [], [], POLL_S)
            for s in readable:
                data = s.recv(BUF)
                if not data:
                    return
                peers[s].sendall(data)


class FaultProxy:
    """Routes plus a fault state shared by all of them. Use as a context manager or call
    stop(); see the module docstring."""

    def __init__(self, source_ips: dict[str, int] | None = None, mode: str = "reset"):
        if mode not in ("reset", "blackhole"):
            raise ValueError(f"mode must be reset or blackhole, not {mode!r}")
        self.source_ips = dict(source_ips or {})
        self.mode = mode
        self.routes: list[Route] = []
        self._lock = threading.Lock()
        self._isolated: set[int] = set()
        self._blocked: set[tuple[int, int]] = set()
        self._links: set[_Link] = set()
        self._sources_seen: set[int] = set()
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.accepted = 0
        self.refused = 0

    # ---- routes --------------------------------------------------------------------
    def add_route(self, listen: tuple[str, int], target: tuple[str, int], dest: int,
                  source: int | None = None) -> Route:
        """Listen on `listen` (port 0 picks one) and forward to `target`."""
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(listen)
        ls.listen(64)
        ls.settimeout(POLL_S * 4)
        route = Route(ls.getsockname(), tuple(target), dest, source)
        self.routes.append(route)
        self._listeners.append(ls)
        self._spawn(self._accept_loop, ls, route)
        return route

    def _spawn(self, fn, *args) -> threading.Thread:
        t = threading.Thread(target=fn, args=args, daemon=True, name=f"fault-proxy-{fn.__name__}")
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()
        return t

    def _accept_loop(self, ls: socket.socket, route: Route) -> None:
        while not self._stopping.is_set():
            try:
                client, (peer_ip, _port) = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            src = route.source if route.source is not None else self.source_ips.get(peer_ip)
            link = _Link(self, route, client, src)
            with self._lock:
                self.accepted += 1
                if src is not None:
                    self._sources_seen.add(src)
                if self._verdict_locked(src, route.dest) != "pass":
                    self.refused += 1
                self._links.add(link)
            self._spawn(link.run)

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    # ---- faults --------------------------------------------------------------------
    def _cut_locked(self, src: int | None, dest: int) -> bool:
        if dest in self._isolated or (src is not None and src in self._isolated):
            return True
        return src is not None and (src, dest) in self._blocked

    def _verdict_locked(self, src: int | None, dest: int) -> str:
        if not self._cut_locked(src, dest):
            return "pass"
        return "reset" if self.mode == "reset" else "freeze"

    def _verdict(self, src: int | None, dest: int) -> str:
        with self._lock:
            return self._verdict_locked(src, dest)

    def _reset_cut_links(self) -> None:
        if self.mode != "reset":
            return  # frozen links notice by themselves
        with self._lock:
            doomed = [ln for ln in self._links if self._cut_locked(ln.src, ln.dest)]
        for ln in doomed:
            ln.close()

    def isolate(self, node: int) -> None:
        """Cut every proxied link to and from `node`."""
        with self._lock:
            self._isolated.add(node)
        self._reset_cut_links()

    def block(self, src: int, dest: int) -> None:
        """Cut the links `src` opens to `dest` (one direction of a partition)."""
        with self._lock:
            self._blocked.add((src, dest))
        self._reset_cut_links()

    def heal(self) -> None:
        with self._lock:
            self._isolated.clear()
            self._blocked.clear()

    def sources_seen(self) -> set[int]:
        """Nodes that have dialled through the proxy. A node whose connections are not
        bound to its own IP is never seen (127.0.0.1, node 1's IP, is the default source
        address: its traffic counts as node 1's), so the tests check this first."""
        with self._lock:
            return set(self._sources_seen)

    def live_links(self) -> list[tuple[int | None, int]]:
        """(source, dest) of the connections currently open through the proxy."""
        with self._lock:
            return sorted(((ln.src, ln.dest) for ln in self._links if not ln.closed.is_set()),
                          key=lambda t: (t[0] or 0, t[1]))

    # ---- lifecycle -----------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()
        for ls in self._listeners:
            ls.close()
        with self._lock:
            links = list(self._links)
        for ln in links:
            ln.close()
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout=2)

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
