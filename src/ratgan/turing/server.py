"""waitress set up for a study served beyond this computer (``--host 0.0.0.0``).

waitress's defaults suit a server behind a proxy, not one facing raters' browsers directly:
it buffers request bodies up to 1 GiB before the application can refuse them, keeps at most
100 connections, and closes a connection only after 120 s without a byte.  A few clients that
open connections and never finish their requests would then lock every rater out.  Here:

- bodies larger than the application accepts are refused by waitress itself (413) as soon as
  the headers announce them, and request heads are capped;
- up to :attr:`ServerLimits.connections` connections are kept (a browser opens about six);
- a request must arrive whole (head and body) within :attr:`ServerLimits.request_seconds` of
  its first byte, however slowly a client trickles it, and an idle connection is closed after
  :attr:`ServerLimits.idle_seconds`.

waitress has no setting for the per-request deadline, so a small subclass of its TCP server
adds it to the server's periodic maintenance (which already closes idle connections).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

MAX_BODY = 4096
"""The largest request body the app accepts (an answer is a few dozen bytes of JSON)."""


@dataclass(frozen=True)
class ServerLimits:
    """What one client may take from the server."""

    max_body: int = MAX_BODY
    max_header: int = 16384
    connections: int = 500
    """Open connections at most (each holds a file descriptor; 1024 is a common limit)."""
    request_seconds: float = 10.0
    idle_seconds: int = 30


class _TimedParser(HTTPRequestParser):
    """A request being received, with the time its first byte arrived."""

    def __init__(self, adj: Adjustments) -> None:
        super().__init__(adj)
        self.started = time.monotonic()


class _Channel(HTTPChannel):
    parser_class = _TimedParser


class _Server(TcpWSGIServer):
    """waitress's TCP server, closing connections whose request is overdue."""

    channel_class = _Channel
    request_seconds = ServerLimits.request_seconds

    def maintenance(self, now: float) -> None:
        """Close idle connections (waitress), and those whose request is overdue."""
        super().maintenance(now)
        cutoff = time.monotonic() - self.request_seconds
        for channel in list(self.active_channels.values()):
            request = getattr(channel, "request", None)
            if request is not None and getattr(request, "started", cutoff) < cutoff:
                channel.will_close = True


def make_server(
    app: Any, host: str, port: int, threads: int, limits: ServerLimits | None = None
) -> Any:
    """A waitress server for ``app`` on ``host``:``port`` within ``limits`` (not started)."""
    limits = limits or ServerLimits()
    adj = Adjustments(
        host=host,
        port=port,
        threads=threads,
        ident="ratgan",
        # waitress refuses a body when its announced length is >= this value
        max_request_body_size=limits.max_body + 1,
        max_request_header_size=limits.max_header,
        connection_limit=limits.connections,
        channel_timeout=limits.idle_seconds,
        cleanup_interval=1,  # how often the deadlines above are checked, in seconds
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict[int, Any] = {}
    servers = []
    for sockinfo in adj.listen:  # several for a host name with IPv4 and IPv6 addresses
        server = _Server(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo)
        server.request_seconds = limits.request_seconds
        servers.append(server)
    if len(servers) == 1:
        return servers[0]
    listen = [(s.effective_host, s.effective_port) for s in servers]
    return MultiSocketServer(socket_map, adj, listen, dispatcher, servers[-1].log_info)


def listening(server: Any) -> list[tuple[str, int]]:
    """(host, port) of every socket a server of :func:`make_server` listens on: one, or one
    per address of a host name with several (waitress's MultiSocketServer, which has no
    ``effective_host``; e.g. localhost as 127.0.0.1 and ::1, each on its own free port for
    port 0)."""
    listen = getattr(server, "effective_listen", None)
    if listen is None:
        return [(str(server.effective_host), int(server.effective_port))]
    return [(str(h), int(p)) for h, p in listen]
