"""The machine's invariants, checked after every step of every machine test."""

from __future__ import annotations

from launcher.config import Policy
from launcher.supervisor import events as ev
from launcher.supervisor import machine as m


def live_ids(s: m.State) -> list[int]:
    """Every process the state knows to be running, in whatever role."""
    o = s.observed
    singles = [t.id for t in o.templates] + ([o.step.id] if o.step is not None else [])
    return singles + [w.id for w in o.workers] + [r.id for r in o.retiring]


def check(before: m.State, s: m.State, actions: list[ev.Action]) -> None:
    known = live_ids(s)
    cfg = m.config(s)
    d = s.desired
    assert len(known) == len(set(known)), f"a process in two roles: {s.observed}"
    assert 1 <= d.target.size <= cfg.server.max_workers
    assert sum(1 for w in s.observed.workers if w.generation == d.target.number and not w.doomed) <= d.target.size
    retiring = {r.id for r in s.observed.retiring}
    for action in actions:
        if isinstance(action, (ev.StopProc, ev.KillProc)):
            assert action.proc in retiring, f"{action} of a process not retiring"
        if isinstance(action, ev.StartWorker):
            assert d.stop is None
            assert s.observed.db.up or cfg.on_db_loss is not Policy.RESTART, "a worker started while the DB is down"
            source = next((t for t in s.observed.templates if t.id == action.template), None)
            assert action.template is None or (source is not None and source.ready and source.warm), (
                f"{action} from no ready template"
            )
        if isinstance(action, (ev.StartTemplate, ev.RunStep)):
            assert d.stop is None
        if isinstance(action, ev.Warm):
            assert s.observed.db.up and set(action.procs) <= {w.id for w in m.serving(s)}, f"{action}: not serving"
        if isinstance(action, ev.Exit):
            assert s.done and not known, f"exit with processes left: {s.observed}"
    if s.done:
        assert (not known and any(isinstance(a, ev.Exit) for a in actions)) or before.done
