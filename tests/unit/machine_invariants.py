"""The pool machine's invariants, checked after every step of every machine test."""
from __future__ import annotations

from launcher.config import Config, Policy
from launcher.supervisor import machine as m


def live_ids(s: m.State) -> list[int]:
    """Every process the state knows to be running, in whatever role."""
    singles = [p.id for p in (s.template, s.candidate, s.prestart.running) if p is not None]
    return singles + [w.id for w in s.workers] + [r.id for r in s.retiring]


def check(cfg: Config, before: m.State, s: m.State, actions: list[m.Action]) -> None:
    known = live_ids(s)
    assert len(known) == len(set(known)), f"a process in two roles: {s}"
    assert s.size >= 1
    assert sum(1 for w in s.workers if w.generation == s.generation) <= s.size
    assert all(w.generation <= s.generation for w in s.workers)
    if s.template is not None and s.candidate is not None:
        assert s.candidate.code > s.template.code
    retiring = {r.id for r in s.retiring}
    step = s.prestart.running.id if s.prestart.running else None
    for action in actions:
        if isinstance(action, (m.StopProc, m.KillProc)):
            assert action.proc in retiring or action.proc == step, f"{action} of a process not retiring"
        if isinstance(action, m.StartWorker):
            assert s.stopping is None
            assert s.db.up or cfg.on_db_loss is not Policy.RESTART, "a worker started while the DB is down"
            assert action.template is None or (s.template is not None and s.template.id == action.template
                                                and s.template.ready), f"{action} from no ready template"
        if isinstance(action, (m.StartTemplate, m.RunStep)):
            assert s.stopping is None
        if isinstance(action, m.Warm):
            assert s.db.up and set(action.procs) <= {w.id for w in m.serving(s)}, f"{action} of no serving worker"
        if isinstance(action, m.Exit):
            assert s.done and not known, f"exit with processes left: {s}"
    if s.done:
        assert not known and any(isinstance(a, m.Exit) for a in actions) or before.done
