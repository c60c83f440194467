"""When to stop for a preemption: the same step on every process.

A scheduler sends SIGTERM to the processes of a job, not always to all of them, and not
at the same moment. Stopping wherever each process sees its own signal would leave
hosts a step apart: one waits in a collective the others never enter, or they save
different steps. So:

- One process: a SIGTERM handler sets a flag; the loop stops after the current step.
- Several processes (jax.distributed): JAX's preemption service (started by
  `jax.distributed.initialize`) catches SIGTERM on whichever host gets it and tells the
  coordinator; every process asks `multihost_utils.reached_preemption_sync_point(step)`
  at every step, and all of them get True at the same step (the highest step any host
  had reached, plus one). No Python handler is installed then: it would replace the
  service's own.
"""

from __future__ import annotations

import logging
import signal

import jax

log = logging.getLogger("kd_jax.train")


def _sync_service():
    from jax._src import distributed  # the service's state has no public accessor

    state = distributed.global_state
    if state.client is None or state.preemption_sync_manager is None:
        return None
    return state.preemption_sync_manager


class PreemptionWatch:
    """`should_stop(step)`, called once per step on every process, agrees across them."""

    def __init__(self):
        self._multi = jax.process_count() > 1 and _sync_service() is not None
        self._flag = False
        self._previous = None
        if not self._multi:
            self._previous = signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame):
        log.warning("SIGTERM: saving a checkpoint after this step and stopping.")
        self._flag = True

    def should_stop(self, step: int) -> bool:
        if not self._multi:
            return self._flag
        from jax.experimental import multihost_utils

        if multihost_utils.reached_preemption_sync_point(step):
            log.warning("Preemption: every process saves step %d and stops.", step)
            return True
        return False

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
