"""Who runs which job next: the driver side's choice of a free worker for each trial (`Dispatch`)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from harness.run._jobs import TrialJob

if TYPE_CHECKING:
    from harness.run._workers import Worker

Job = tuple[str, list[TrialJob]]


class Dispatch:
    """Who runs which job next, for worker threads that each ask `next_for(worker)` when free.

    Trials that continue another (`follow`) go before the queue. A free worker on the device with the fewest jobs
    running takes the next job (ties: the slots' order), so two GPUs share the work evenly when fewer trials than
    slots are left. A spare worker takes only continuing trials, and only when no slot is free for them while the
    queue waits; a slot takes a continuing trial when the queue is empty (no process more than needed)."""

    def __init__(self, jobs: list[Job], workers: Sequence[Worker], spares: Sequence[Worker] = ()) -> None:
        self.queue: deque[Job] = deque(jobs)
        self.following: deque[Job] = deque()
        self.order = {id(w): k for k, w in enumerate([*workers, *spares])}
        self.free: list[Worker] = []
        self.assigned: dict[int, Job] = {}
        self.load: dict[tuple[str, ...], int] = {}
        self.running = 0
        self.cond = threading.Condition()

    def next_for(self, worker: Worker) -> Job | None:
        """Block until `worker` is given a job (returned) or nothing is left to do (None)."""
        with self.cond:
            self.free.append(worker)
            self._assign()
            self.cond.wait_for(lambda: id(worker) in self.assigned or self._finished())
            if id(worker) not in self.assigned:
                self.free.remove(worker)
                return None
            return self.assigned.pop(id(worker))

    def follow(self, jobs: list[Job]) -> None:
        """Continuing trials, ready now: before the queue."""
        with self.cond:
            self.following.extend(jobs)
            self._assign()

    def done(self, worker: Worker, follow: list[Job]) -> None:
        """`worker` finished its job; `follow`: continuing trials that were waiting for it."""
        with self.cond:
            self.running -= 1
            key = tuple(worker.devices)
            self.load[key] -= 1
            self.following.extend(follow)
            self._assign()

    def _finished(self) -> bool:
        return not self.queue and not self.following and self.running == 0

    def _assign(self) -> None:
        while (pick := self._pick()) is not None:
            worker, source = pick
            self.free.remove(worker)
            self.assigned[id(worker)] = source.popleft()
            self.running += 1
            key = tuple(worker.devices)
            self.load[key] = self.load.get(key, 0) + 1
        self.cond.notify_all()

    def _pick(self) -> tuple[Worker, deque[Job]] | None:
        slots = [w for w in self.free if not w.spare]
        spares = [w for w in self.free if w.spare]
        if self.following:
            # a slot when the queue is empty or no spare is free; else a spare, leaving the slots to the queue
            candidates = slots if (slots and (not self.queue or not spares)) else spares
            source = self.following
        elif self.queue:
            candidates, source = slots, self.queue
        else:
            return None
        if not candidates:
            return None
        return min(candidates, key=lambda w: (self.load.get(tuple(w.devices), 0), self.order[id(w)])), source
