"""A TCP proxy in front of MySQL whose path the test can black-hole: connections are
accepted and data is held, nothing is forwarded, as when a network drops packets."""

from __future__ import annotations

import select
import socket
import threading


class BlackholeProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.closed = threading.Event()
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept_loop)

    def blackhole(self) -> None:
        self.open.clear()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.closed.set()
        self.open.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(5)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self.threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self.closed.is_set():
            try:
                ready, _, _ = select.select([self.listener], [], [], 0.1)
                if ready:
                    client, _ = self.listener.accept()
                    self._spawn(self._serve, client)
            except OSError:
                return

    def _serve(self, client: socket.socket) -> None:
        self.open.wait()  # a connection made during the black hole waits, unanswered
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        self._spawn(self._pump, client, server)
        self._pump(server, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.closed.is_set():
                if not self.open.wait(0.1):
                    continue
                ready, _, _ = select.select([src], [], [], 0.1)
                if not ready or not self.open.is_set():
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ValueError):
            pass  # the other direction closed both sockets
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
