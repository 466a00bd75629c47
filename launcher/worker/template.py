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

Protocol on the control socket (SOCK_SEQPACKET, one message each; words apart by NUL):
  template -> launcher  b"warm" | b"cold <why>"          once, after the import
  launcher -> template  b"fork\0<name>" + fds [private listener, ready pipe]: a worker
  launcher -> template  b"run\0<name>\0<module>\0<args>...": a prestart step `python -m module`
  template -> launcher  b"forked <name> <pid>"
A prestart step forked from here skips the interpreter's start and the imports the app
already made (the migration check: ~0.3 s as a process of its own, ~20 ms forked).
A template that has threads at fork time cannot fork safely (a lock held by another
thread stays held in the child forever): it says `cold`, and the launcher starts each
worker cold instead.
"""
from __future__ import annotations

import argparse
import gc
import os
import runpy
import signal
import socket
import sys
import threading
import traceback
from typing import Callable

from launcher.worker.serve import app_arguments, app_config, name_process, serve

MAX_MESSAGE = 65536


def other_threads() -> str:
    """Why forking is unsafe, or '' when this is the only thread."""
    names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    native = len(os.listdir("/proc/self/task")) - 1
    if names:
        return "threads: " + ", ".join(names)
    return f"{native} native threads" if native > 0 else ""


def double_fork(become: Callable[[], int], control: socket.socket, name: str) -> int:
    """Run `become` in a grandchild whose go-between exits at once; return the grandchild's pid.
    The grandchild never returns into the template's loop, whatever happens."""
    read_pid, write_pid = os.pipe()
    between = os.fork()
    if between == 0:
        try:
            child = os.fork()
            if child == 0:
                code = 1
                try:
                    os.close(read_pid)
                    os.close(write_pid)
                    control.close()
                    os.setsid()
                    name_process(name)
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    code = become()
                except SystemExit as done:  # uvicorn's way to say the app failed to start (3)
                    code = _exit_code(done)
                finally:
                    os._exit(code)
            os.write(write_pid, str(child).encode())
        finally:
            os._exit(0)
    os.close(write_pid)
    pid = os.read(read_pid, 32)
    os.close(read_pid)
    os.waitpid(between, 0)
    return int(pid)


def run_module(argv: list[str]) -> int:
    """A prestart step `python -m module args...`, run as `python -m` would, but in a fork of
    a process that has the app's libraries imported already: no interpreter start, no imports."""
    module, *args = argv
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        return _exit_code(done)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _exit_code(done: SystemExit) -> int:
    return done.code if isinstance(done.code, int) else 0 if done.code is None else 1


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
        kind, name, *words = message.decode().split("\0")
        try:
            if kind == "fork" and len(fds) == 2:
                listener, private, ready = args.fd, fds[0], fds[1]
                pid = double_fork(lambda: serve(config, [listener, private], ready), control, "worker")
            elif kind == "run" and words:
                pid = double_fork(lambda: run_module(words), control, "step")
            else:
                continue
            control.send(f"forked {name} {pid}".encode())
        finally:
            for fd in fds:
                os.close(fd)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
