"""``depfakes doctor``: for each dependency, which backend would serve here and why the
others cannot, with the fix; fails when a dependency the project's tests declare cannot.

It runs as a pytest collection (``--collect-only``) so it sees the project's own markers,
ini settings and plugins, and starts nothing.
"""

from __future__ import annotations

from collections import Counter

import pytest

from depfakes import registry
from depfakes.backends import NEEDS_PULL, registered
from depfakes.state import SPEC_KEY, session_state

# Set by the collection hook; the session's exit status follows it (plugin).
FAILED_KEY = pytest.StashKey[bool]()


def report(session: pytest.Session) -> None:
    declared: Counter[str] = Counter()
    for item in session.items:
        spec = item.stash.get(SPEC_KEY, None)
        if spec:
            declared.update(spec.versions.keys())
    settings = session_state(session.config).runtime.settings
    forced = settings.get("backend")
    write = session.config.get_terminal_writer().line
    failing = []
    for name in registry.names():
        found = registry.get(name).diagnose(settings)
        auto = [name for name, backend in registered().items() if backend.auto]
        order = [b for b in ("fake", "in-process", *auto) if b in found]
        if forced.get(name) in found:
            order = [forced[name]]
        usable = [b for b in order if found[b][0]]
        pick = usable[0] if usable else None
        uses = f"declared by {declared[name]} test(s)" if declared[name] else "not declared"
        write(f"{name:<10} {uses:<26} -> {_pick_text(pick, usable, found)}")
        for backend, (ok, detail) in found.items():
            write(f"    {backend:<11} {'yes' if ok else 'no ':<4} {detail}")
        if pick is None and declared[name]:
            failing.append(name)
    if failing:
        write(f"depfakes doctor: {', '.join(failing)} cannot run here, but tests declare it")
    else:
        write("depfakes doctor: every declared dependency can run here")
    session.config.stash[FAILED_KEY] = bool(failing)


def _pick_text(pick: str | None, usable: list[str], found: dict[str, tuple[bool, str]]) -> str:
    """The backend a run would use; one that must pull an image first may not get it
    (no registry reachable), and then the run goes on to the next."""
    if pick is None:
        return "NO BACKEND"
    if NEEDS_PULL not in found[pick][1]:
        return pick
    then = f"; if no registry is reachable, {usable[1]}" if len(usable) > 1 else (
        "; nothing else can serve it if no registry is reachable")
    return f"{pick} (after pulling its image{then})"
