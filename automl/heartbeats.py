"""The driver's heartbeats: Optuna's stale-trial check (any host) and a resume (this host)
fail the trials of a driver that stopped recording them, so they run again."""

from __future__ import annotations

import logging
import threading

import optuna

from automl import optuna_internals as internals
from automl import study as study_mod

log = logging.getLogger("automl")


class Heartbeats(threading.Thread):
    """Records a heartbeat for every running trial of this driver, every few seconds."""

    def __init__(self, study: optuna.Study) -> None:
        super().__init__(name="automl-heartbeats", daemon=True)
        self.storage = internals.storage_of(study)
        self.interval = self.storage.get_heartbeat_interval() or study_mod.HEARTBEAT_S
        self.trial_ids: set[int] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            with self.lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # noqa: BLE001 - a missed beat is retried next time
                    log.debug("heartbeat of trial %d failed: %s", trial_id, exc)

    def add(self, trial_id: int) -> None:
        self.storage.record_heartbeat(trial_id)
        with self.lock:
            self.trial_ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self.lock:
            self.trial_ids.discard(trial_id)
