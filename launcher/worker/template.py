"""The template: imports the app once, then forks workers and prestart steps when asked.

A new worker then pays for uvicorn's startup only (tens of milliseconds), not for the
app's import (~1 s here). The template opens no DB connection, starts no thread and runs
no event loop; it calls `gc.freeze()` so the workers share its pages instead of copying
them at the first collection.

Workers must be the launcher's children (one reaper, one place that signals, nothing
left behind), so each is forked twice: the template forks a go-between, which forks the
worker and exits at once. The orphaned worker is re-parented to the launcher, which is
PID 1 or a child subreaper. The worker starts a session of its own, so the launcher
stops it by its process group, and says its pid itself on its own channel: the template
may die before it could.

A template that has threads at fork time cannot fork safely (a lock held by another
thread stays held in the child forever): it says `cold`, and the launcher starts each
worker cold instead. The messages are in launcher/wire.py.
"""

from __future__ import annotations

import gc
import os
import runpy
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable

import uvicorn

from launcher import wire
from launcher.worker.channel import Channel
from launcher.worker.digest import Recorder
from launcher.worker.serve import arguments, name_process, serve
from launcher.worker.settings import STARTUP_ERRORS, Settings


def other_threads() -> str:
    """Why forking is unsafe, or '' when this is the only thread."""
    names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    native = len(os.listdir("/proc/self/task")) - 1
    if names:
        return "threads: " + ", ".join(names)
    return f"{native} native threads" if native > 0 else ""


def double_fork(become: Callable[[], int], close: list[int], name: str) -> None:
    """Run `become` in a grandchild whose go-between exits at once. The grandchild closes
    what it must not hold and never returns into the template's loop, whatever happens."""
    between = os.fork()
    if between == 0:
        try:
            if os.fork() == 0:
                code = 1
                try:
                    for fd in close:
                        os.close(fd)
                    os.setsid()
                    name_process(name)
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    code = become()
                except SystemExit as done:
                    code = exit_code(done)
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(code)
        finally:
            os._exit(0)
    os.waitpid(between, 0)


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
        return exit_code(done)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def exit_code(done: SystemExit) -> int:
    return done.code if isinstance(done.code, int) else 0 if done.code is None else 1


class Template:
    def __init__(self, config: uvicorn.Config, listener: int, control: socket.socket) -> None:
        self.config = config
        self.listener = listener
        self.control = control

    def worker(self, fd: int) -> Callable[[], int]:
        def become() -> int:
            channel = Channel(fd)
            channel.hello()
            return serve(self.config, self.listener, channel)

        return become

    def step(self, fd: int, argv: list[str]) -> Callable[[], int]:
        def become() -> int:
            os.close(self.listener)  # a step holds only what it needs: not the public socket
            Channel(fd).hello()
            return run_module(argv)

        return become

    def serve_requests(self) -> int:
        """Fork what the launcher asks for, until it closes the channel."""
        while True:
            message, fds, closed = wire.receive(self.control, max_fds=1)
            if closed:
                return 0  # the launcher is gone, or retires us
            try:
                self.fork(message, fds)
            except OSError as err:  # the launcher sees the new process's channel close: it never started
                print(f"template: cannot fork: {err}", file=sys.stderr)
            finally:
                for fd in fds:
                    os.close(fd)

    def fork(self, message: wire.Message | None, fds: list[int]) -> None:
        if message is None or len(fds) != 1:
            return
        match message.kind:
            case "fork":
                double_fork(self.worker(fds[0]), [self.control.fileno()], "worker")
            case "run":
                double_fork(self.step(fds[0], list(message.words[1:])), [self.control.fileno()], "step")


def main(argv: list[str]) -> int:
    args = arguments("python -m launcher.worker.template").parse_args(argv)
    name_process("template")
    listener, control_fd = args.fd
    control = socket.socket(fileno=control_fd)
    settings = Settings.parse(args.settings)
    recorder = Recorder(settings.app_dir)
    try:
        with recorder.recording():
            config = settings.uvicorn_config()
    except SystemExit:  # uvicorn logged why (the module or attribute is not there)
        wire.send(control, wire.encode("failed", STARTUP_ERRORS.text() or "the app could not be loaded"))
        return 1
    except BaseException:  # the app's own import failed: its traceback, printed once
        text = traceback.format_exc()
        print(text, file=sys.stderr, end="")
        wire.send(control, wire.encode("failed", text))
        return 1
    digest = recorder.digest()
    unsafe = other_threads()
    if unsafe:
        wire.send(control, wire.encode("cold", digest, unsafe))
        control.recv(1)  # wait to be retired; an EOF means the launcher is gone
        return 0
    gc.freeze()
    wire.send(control, wire.encode("warm", digest))
    return Template(config, listener, control).serve_requests()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
