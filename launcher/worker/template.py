"""The template: imports the app once, then forks workers when the launcher asks.

A new worker then pays for uvicorn's startup only (tens of milliseconds), not for the
app's import (~1 s here). The template opens no DB connection, starts no thread and runs
no event loop; it calls `gc.freeze()` so the workers share its pages instead of copying
them at the first collection.

Workers must be the launcher's children (one reaper, one place that signals, nothing
left behind), so each is forked twice: the template forks a go-between, which forks the
worker and exits at once. The orphaned worker is re-parented to the launcher, which is
PID 1 or a child subreaper. The worker starts a session of its own, so the launcher
stops it by its process group.

Protocol on the control socket (SOCK_SEQPACKET, one message each):
  template -> launcher  b"warm" | b"cold <why>"          once, after the import
  launcher -> template  b"fork <name>" + fds [private listener, ready pipe]
  template -> launcher  b"forked <name> <pid>"
A template that has threads at fork time cannot fork safely (a lock held by another
thread stays held in the child forever): it says `cold`, and the launcher starts each
worker cold instead.
"""
from __future__ import annotations

import argparse
import gc
import os
import signal
import socket
import sys
import threading

import uvicorn

from launcher.worker.serve import app_arguments, app_config, name_process, serve

MAX_MESSAGE = 256


def other_threads() -> str:
    """Why forking is unsafe, or '' when this is the only thread."""
    names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    native = len(os.listdir("/proc/self/task")) - 1
    if names:
        return "threads: " + ", ".join(names)
    return f"{native} native threads" if native > 0 else ""


def fork_worker(config: uvicorn.Config, listener: int, private: int, ready: int, control: socket.socket) -> int:
    """Fork a worker through a go-between that exits at once; return the worker's pid."""
    read_pid, write_pid = os.pipe()
    between = os.fork()
    if between == 0:
        try:
            worker = os.fork()
            if worker == 0:
                os.close(read_pid)
                os.close(write_pid)
                _become_worker(config, listener, private, ready, control)
            os.write(write_pid, str(worker).encode())
        finally:
            os._exit(0)
    os.close(write_pid)
    pid = os.read(read_pid, 32)
    os.close(read_pid)
    os.waitpid(between, 0)
    return int(pid)


def _become_worker(config: uvicorn.Config, listener: int, private: int, ready: int, control: socket.socket) -> None:
    """Never returns into the template's loop, whatever happens."""
    code = 1
    try:
        control.close()
        os.setsid()
        name_process("worker")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        code = serve(config, [listener, private], ready)
    except SystemExit as done:  # uvicorn's way to say the app failed to start (3)
        code = done.code if isinstance(done.code, int) else 1
    finally:
        os._exit(code)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = app_arguments("python -m launcher.worker.template")
    parser.add_argument("--fd", type=int, required=True, help="the public listening socket")
    parser.add_argument("--control-fd", type=int, required=True, help="the control socket to the launcher")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    name_process("template")
    control = socket.socket(fileno=args.control_fd)
    config = app_config(args.app, args.log_level, not args.no_access_log)
    unsafe = other_threads()
    if unsafe:
        control.send(f"cold {unsafe}".encode()[:MAX_MESSAGE])
        control.recv(MAX_MESSAGE)  # wait to be retired; an EOF means the launcher is gone
        return 0
    gc.freeze()
    control.send(b"warm")
    while True:
        message, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 2)
        if not message:
            return 0  # the launcher closed the channel: it is gone, or retiring us
        words = message.decode().split()
        try:
            if words[0] == "fork" and len(fds) == 2:
                pid = fork_worker(config, args.fd, fds[0], fds[1], control)
                control.send(f"forked {words[1]} {pid}".encode())
        finally:
            for fd in fds:
                os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
