"""Real network faults for one process of a test: a proxy that stops forwarding without
closing, and a network namespace whose link to the machine's servers can be cut.

Only links of processes the test starts are cut; the machine's servers are never touched.
"""

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
from urllib.parse import urlsplit, urlunsplit


class StallingProxy:
    """A TCP forwarder on its own port: ``stall()`` stops it reading from either side (and
    accepting) without closing anything, as a partition leaves a connection hanging."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.forwarding = threading.Event()
        self.forwarding.set()
        self.closed = False
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        """``url`` (of the upstream server) pointed at this proxy instead."""
        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def stall(self) -> None:
        self.forwarding.clear()

    def close(self) -> None:
        self.closed = True
        self.forwarding.set()
        for sock in self.sockets:
            sock.close()

    def _accept(self) -> None:
        while not self.closed:
            self.forwarding.wait()
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.forwarding.is_set():
                # Accepted as the stall began: hold it open, unread, like the others.
                self.sockets.append(client)
                continue
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        while not self.closed:
            self.forwarding.wait()
            if self.closed:
                return
            try:
                readable, _, _ = select.select([a, b], [], [], 0.1)
                for sock in readable:
                    if not self.forwarding.is_set():
                        break
                    data = sock.recv(65536)
                    if not data:
                        return
                    peer[sock].sendall(data)
            except OSError:
                return


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


class Namespace:
    """A network namespace joined to the root one by a veth pair; from inside it, the
    machine's servers (listening on 127.0.0.1 only) are reached through socat forwarders
    on the root side of the pair. ``cut()`` drops every packet between the two."""

    def __init__(self, tag: str) -> None:
        if shutil.which("ip") is None or shutil.which("socat") is None:
            raise RuntimeError("needs ip (iproute2) and socat")
        if shutil.which("iptables") is None:
            raise RuntimeError("needs iptables (apt-get install -y iptables)")
        self.name = f"hf-{tag}"
        self.outer, self.inner = f"hf{tag}a", f"hf{tag}b"
        subnet = 1 + os.getpid() % 250
        self.root_address = f"10.231.{subnet}.1"
        self.inner_address = f"10.231.{subnet}.2"
        self.forwarders: list[subprocess.Popen] = []
        self.rules: list[list[str]] = []

    def create(self) -> None:
        _run("ip", "netns", "add", self.name)
        _run("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        _run("ip", "link", "set", self.inner, "netns", self.name)
        _run("ip", "addr", "add", f"{self.root_address}/30", "dev", self.outer)
        _run("ip", "link", "set", self.outer, "up")
        self.exec("ip", "addr", "add", f"{self.inner_address}/30", "dev", self.inner)
        self.exec("ip", "link", "set", self.inner, "up")
        self.exec("ip", "link", "set", "lo", "up")

    def exec(self, *args: str) -> None:
        _run("ip", "netns", "exec", self.name, *args)

    @property
    def prefix(self) -> list[str]:
        """Put before a command to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def forward(self, url: str) -> str:
        """Forward the server of ``url`` (on 127.0.0.1) to the namespace; return the URL
        that reaches it from inside."""
        parts = urlsplit(url)
        probe = socket.create_server((self.root_address, 0))
        port = probe.getsockname()[1]
        probe.close()
        self.forwarders.append(
            subprocess.Popen(
                [
                    "socat",
                    f"TCP-LISTEN:{port},bind={self.root_address},reuseaddr,fork",
                    f"TCP:127.0.0.1:{parts.port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # with the children it forks per connection
            )
        )
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@{self.root_address}:{port}" if auth else f"{self.root_address}:{port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def cut(self, port: int) -> None:
        """Drop every packet to and from the forwarder on ``port``, inside the namespace:
        open connections hang, as in a real partition, rather than being refused."""
        for rule in (
            ["OUTPUT", "-p", "tcp", "-d", self.root_address, "--dport", str(port), "-j", "DROP"],
            ["INPUT", "-p", "tcp", "-s", self.root_address, "--sport", str(port), "-j", "DROP"],
        ):
            self.exec("iptables", "-A", *rule)
            self.rules.append(rule)

    def heal(self) -> None:
        for rule in self.rules:
            self.exec("iptables", "-D", *rule)
        self.rules = []

    def remove(self) -> None:
        """Remove everything this namespace added, whatever state it is in."""
        for forwarder in self.forwarders:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(forwarder.pid, signal.SIGKILL)
            forwarder.wait(10)
        # Deleting the namespace deletes its end of the pair, and so the pair.
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True)
