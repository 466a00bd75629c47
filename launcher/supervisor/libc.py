"""The libc calls the standard library has no wrapper for."""

from __future__ import annotations

import ctypes

PR_SET_CHILD_SUBREAPER = 36
M_ARENA_MAX = -8


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> bool:
    """Adopt orphaned descendants even when not PID 1, so none outlives the launcher."""
    try:
        return bool(_libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def one_malloc_arena() -> bool:
    """glibc gives each thread that allocates an arena of its own; the watcher threads'
    arenas held 0.3 MB for a few short allocations each second. One arena for all."""
    try:
        return bool(_libc().mallopt(M_ARENA_MAX, 1) == 1)
    except (OSError, AttributeError):
        return False  # not glibc (musl has no arenas)


def release_free_memory() -> None:
    """What the start-up allocated and freed (the config's parsing, the imports) glibc keeps
    for later; the launcher needs little more for the container's life. 0.6 MB back here."""
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc
