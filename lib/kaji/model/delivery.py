"""The delivery queue: which hook runs next, coalescing, leader election, settling.

Juju runs one hook at a time per unit, coalesces a pending hook with a newer one of the same
kind, and lets actions go first; with a seed the model picks any ready unit and any hook whose
earlier conflicting hooks have run. ``settle`` runs hooks until none is pending.
"""

from __future__ import annotations

import collections
import random
import time

from kaji.model.errors import NotConvergingError, RunStats
from kaji.model.scoping import Scoping
from kaji.model.world import Event, Unit

#: Juju's default update-status-hook-interval (environs/config DefaultUpdateStatusHookInterval).
UPDATE_STATUS_INTERVAL = 300.0
#: Juju's RotateRetryDelay and ExpireRetryDelay (core/secrets/rotate.go).
SECRET_RETRY_DELAY = 300.0


class Delivery(Scoping):
    """Queues hooks and picks the next one; running it is the ``HookRunner``'s job."""

    rng: random.Random | None
    history: collections.deque[tuple[str, Event]]
    _cursor: int

    def _run(self, unit: Unit, index: int) -> None:
        """Run the unit's queued hook ``index`` (``HookRunner``)."""
        raise NotImplementedError

    def _run_action(self, unit: Unit) -> None:
        """Run the unit's oldest queued action (``HookRunner``)."""
        raise NotImplementedError

    def pending(self) -> int:
        """How many hooks are queued across all units."""
        return sum(len(u.queue) for u in self.world.units.values())

    def counters(self) -> dict[str, dict[str, int]]:
        """A copy of every unit's counters."""
        return {n: dict(u.counters) for n, u in self.world.units.items()}

    def _queue(self, unit: Unit, event: Event) -> None:
        if unit.dying and event.kind not in ("relation-departed", "relation-broken", "stop"):
            return
        if event.kind != "relation-joined" and event in unit.queue:
            return  # Juju coalesces: a pending hook already sees the newest data
        unit.queue.append(event)

    def _update_status_interval(self, stretch: float = 1.0) -> float:
        """The time to a unit's next update-status (Juju randomises it by ±20%)."""
        jitter = 0.8 + 0.4 * self.rng.random() if self.rng is not None else 1.0
        return UPDATE_STATUS_INTERVAL * stretch * jitter

    def _queue_first_election(self, unit: Unit) -> None:
        """Queue an application's first leader-elected on the unit.

        Juju runs leader-elected only once the unit is installed; its leadership tracker may
        claim the lease when the agent starts (is-leader true even in install) or later.
        Without a seed: leader-elected after install and relation-created, leadership taken
        as it runs. With a seed: after any of the unit's first hooks, taken early or late.
        """
        position = unit.queue.index(Event("config-changed"))
        if self.rng is not None:
            position = self.rng.randint(1, len(unit.queue))
            if self.rng.random() < 0.5:
                self.world.apps[unit.app].leader = unit.name
        unit.queue.insert(position, Event("leader-elected"))

    def _elect(self, app_name: str) -> None:
        """Elect a leader among the application's live units when it has none, nor a claim.

        Without a seed the lowest-numbered unit wins; with a seed, any of them.
        """
        app = self.world.apps.get(app_name)
        if app is None or app.leader is not None or self._claim_pending(app_name):
            return
        candidates = self.units_of(app_name)
        if not candidates:
            return
        chosen = self.rng.choice(candidates) if self.rng is not None else candidates[0]
        app.leader = chosen.name
        self._queue(chosen, Event("leader-elected"))

    def _action_ready(self, unit: Unit) -> bool:
        """Whether the unit runs a queued action next (Juju: once installed, even in error)."""
        return bool(unit.actions) and bool(unit.hooks_by_kind.get("install"))

    def settle(self, max_hooks: int | None = None) -> RunStats:
        """Run hooks until none is pending; raise NotConvergingError when the budget runs out.

        Units whose last hook failed are retried once, then left in error (like
        ``juju resolve --no-retry`` was never run).
        """
        alive = sum(1 for u in self.world.units.values() if not u.dying)
        # Peers join pairwise: n units of one application inherently cost O(n^2) hooks.
        budget = max_hooks if max_hooks is not None else 400 + 60 * alive + 4 * alive**2
        for unit in self.world.units.values():
            unit.error = None
        before = self.counters()
        started = time.perf_counter()
        ran = 0
        per_unit: collections.Counter[str] = collections.Counter()
        while (picked := self._pick()) is not None:
            unit, index = picked
            if ran >= budget:
                busiest = per_unit.most_common(5)
                recent = "; ".join(f"{u}: {e}" for u, e in list(self.history)[-12:])
                raise NotConvergingError(
                    f"the model did not converge within {budget} hooks "
                    f"({self.pending()} still pending); busiest units: "
                    + ", ".join(f"{u} ({n} hooks)" for u, n in busiest)
                    + f"; last hooks: {recent}",
                    busiest,
                )
            ran += 1
            per_unit[unit.name] += 1
            if index < 0:
                self._run_action(unit)
            else:
                self._run(unit, index)
        after = self.counters()
        moved = {
            name: {k: v - before.get(name, {}).get(k, 0) for k, v in counters.items()}
            for name, counters in after.items()
        }
        return RunStats(ran, time.perf_counter() - started, moved)

    def _pick(self) -> tuple[Unit, int] | None:
        """The next unit to run and what: an index into its queue, or -1 for its next action.

        A queued action runs before the unit's other pending hooks (Juju's uniter consults its
        actions resolver before the hook resolvers), also while a hook is in error.
        """
        ready = [
            u
            for u in self.world.units.values()
            if (u.queue and u.error is None) or self._action_ready(u)
        ]
        if not ready:
            return None
        if self.rng is None:
            names = sorted(self.world.units)
            ready_names = {u.name for u in ready}
            for step in range(len(names)):
                name = names[(self._cursor + step) % len(names)]
                if name in ready_names:
                    self._cursor = (names.index(name) + 1) % len(names)
                    unit = self.world.units[name]
                    return unit, -1 if self._action_ready(unit) else 0
            return None
        unit = self.rng.choice(sorted(ready, key=lambda u: u.name))
        if self._action_ready(unit):
            return unit, -1
        eligible = [
            i
            for i, event in enumerate(unit.queue)
            if not any(earlier.conflicts(event) for earlier in unit.queue[:i])
        ]
        return unit, self.rng.choice(eligible)
