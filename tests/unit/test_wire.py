"""The one wire format: every message round-trips, and anything else is dropped, never raised."""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher import wire

MESSAGES = [
    ("fork", ("7",)),
    ("run", ("9", "api.migrate")),
    ("run", ("9", "alembic", "upgrade", "head")),
    ("warm", ("3f2a",)),
    ("cold", ("3f2a", "threads: poller, scheduler")),
    ("failed", ('Traceback (most recent call last):\n  File "main.py", line 1\nSyntaxError: invalid syntax',)),
    ("pid", ("4242", "123456")),
    ("serving", ()),
    ("ping", ("1",)),
    ("pong", ("1",)),
    ("check", ("2", "/api/health")),
    ("checked", ("2", "200")),
]


@pytest.mark.parametrize(("kind", "words"), MESSAGES)
def test_every_message_round_trips(kind: str, words: tuple[str, ...]) -> None:
    assert wire.decode(wire.encode(kind, *words)) == wire.Message(kind, words)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\0",
        b"fork",
        b"fork\x007\x008",
        b"pid\x0012",
        b"pid\x00x\x001",
        b"pid\x00\xd9\xa0\x001",
        b"ping\x00-1",
        b"hello\x001",
        b"\xff\xfe",
        b"checked\x002",
        b"serving\x00extra",
        b"warm",
    ],
)
def test_garbage_decodes_to_nothing(data: bytes) -> None:
    assert wire.decode(data) is None


@given(st.binary(max_size=300))
def test_no_bytes_make_decode_raise(data: bytes) -> None:
    message = wire.decode(data)
    assert message is None or message.kind in {kind for kind, _ in MESSAGES}


def test_a_word_cannot_smuggle_a_separator() -> None:
    assert wire.decode(wire.encode("cold", "d", "a\0b")) == wire.Message("cold", ("d", "a b"))


def test_a_huge_traceback_is_cut_to_one_message() -> None:
    data = wire.encode("failed", "x" * 200_000)
    assert len(data) <= wire.MAX_MESSAGE
    message = wire.decode(data)
    assert message is not None and message.words[0].endswith("[cut]")


def test_descriptors_arrive_close_on_exec_and_a_truncated_message_is_dropped() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    with ours, theirs:
        wire.send(ours, wire.encode("fork", "5"), [r])
        message, fds, closed = wire.receive(theirs, max_fds=1)
        assert message == wire.Message("fork", ("5",)) and len(fds) == 1 and not closed
        assert not os.get_inheritable(fds[0])
        os.close(fds[0])
        ours.send(b"x" * (wire.MAX_MESSAGE + 10))
        assert wire.receive(theirs) == (None, [], False)
        ours.close()
        assert wire.receive(theirs) == (None, [], True)
    os.close(r)
    os.close(w)


def test_the_start_time_tells_processes_apart() -> None:
    assert wire.start_time() == wire.start_time(os.getpid()) > 0
    assert wire.start_time(1) != wire.start_time()
    assert wire.start_time(2**22 + 12345) == 0
