"""``automl dashboard OUT``: serve a run's Optuna study in optuna-dashboard.

The run folder written by ``automl fit`` names its study storage and study
(:mod:`automl.rundir` reads and checks it, and loads the study). Before serving,
:func:`annotate_study` adds what makes the trials readable in the dashboard (the objective's
metric name, a study note that explains the run and the trial attributes, the report's
best-score-per-learner chart); it never overwrites a note the user wrote.

The server runs optuna-dashboard's WSGI app (:func:`optuna_dashboard.wsgi`) on wsgiref with a
thread per request, as optuna-dashboard's own command does; :func:`optuna_dashboard.run_server`
does not fit: it serves one request at a time and gives no hook between binding the port and
serving, so the URL could only be printed before the port listens. The server binds to
127.0.0.1 unless ``--host`` says otherwise: optuna-dashboard has no authentication and lets
any visitor edit notes, tell trials and delete the study.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import io
import logging
import math
import signal
import socket
import warnings
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

from automl import optuna_internals
from automl.exceptions import ConfigError
from automl.report.optimization import best_per_learner_figure
from automl.rundir import RunFolder, load_study, open_run
from automl.study import best_trials

log = logging.getLogger("automl")
NOTE_SHA_ATTR = "automl:note_sha256"  # study system attr: the hash of the note automl wrote
PLOT_ID = "automl-best-per-learner"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def run_note(study: Any, run: RunFolder) -> str:
    """The study note shown in the dashboard: the run and how to read its trials (Markdown)."""
    from optuna.trial import TrialState

    info = {**study.user_attrs, **run.info}
    direction = study.direction.name.lower()
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]
    best = next(iter(best_trials(done, direction, 1)), None)
    members = (run.manifest or {}).get("members") or []
    model = None
    if len(members) > 1:
        model = "ensemble of trials " + ", ".join(str(m.get("trial")) for m in members)
    elif members:
        first = members[0]
        model = f"trial {first.get('trial')} ({first.get('learner')}), refitted on all rows"
    rows = [("task", info.get("task")), ("metric", f"{info.get('metric')} ({direction})"),
            ("target", info.get("target")), ("data", info.get("data")),
            ("rows", info.get("n_rows")), ("validation", info.get("validation")),
            ("learners", ", ".join(info.get("learners") or [])),
            ("sampler / pruner / seed",
             f"{info.get('sampler', '?')} / {info.get('pruner', '?')} / {info.get('seed', '?')}"),
            ("elapsed", f"{info['elapsed_s']} s" if "elapsed_s" in info else None),
            ("best trial", f"{best.number} ({best.params.get('learner')}) = {_fmt(best.value)}"
             if best else None),
            ("saved model", model),
            ("run folder", str(run.path.resolve()))]
    table = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in rows if v not in (None, "", "None"))
    return f"""## automl run

| | |
| --- | --- |
{table}

**Reading the trials.** The parameter `learner` is the model family of a trial; its
hyperparameters are named `<learner>__<name>` (a trial has only its own learner's). The
objective is the mean validation score over the folds. User attributes:

- `fold_scores`: the score on each validation fold; `fit_time`: seconds fitting all folds,
  `fold_fit_time`: seconds per fold; `n_iterations`: boosting rounds / stages kept;
- `balanced_accuracy`, `macro_f1`, `min_class_recall` (classification): balance-aware
  metrics on the out-of-fold predictions;
- `fail_reason`: why a failed trial failed; `worker`: the process that ran it;
- `queued`: `default` (the learner's cheap default configuration), `portfolio` (a
  known-good configuration) or `probe` (with a time budget, the first learner's default on
  at most 10,000 training rows and one fold, run first), queued before the sampler takes
  over; `started_early_s`: the probe started that long before its trial existed (it ran
  while the study opened);
- `train_rows`: the training rows a fold used, when a trial fitted a sample of them.

Pruned trials were stopped early by the pruner, which compares trials of the same learner.
A self-contained HTML report: `automl report {run.path}`.
"""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def annotate_study(study: Any, run: RunFolder) -> None:
    """Add the metric name, a run note and a best-per-learner chart to the study (idempotent)."""
    from optuna_dashboard import get_note, save_note, save_plotly_graph_object

    metric = study.user_attrs.get("metric") or run.info.get("metric")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if metric and not study.metric_names:
            study.set_metric_names([str(metric)])
        # write the note when there is none, or refresh ours; a note a user edited is kept
        note = get_note(study)
        storage, sid = optuna_internals.storage_of(study), optuna_internals.study_id(study)
        ours = storage.get_study_system_attrs(sid).get(NOTE_SHA_ATTR)
        if not note.strip() or ours == _sha(note):
            text = run_note(study, run)
            if text != note:
                save_note(study, text)
                storage.set_study_system_attr(sid, NOTE_SHA_ATTR, _sha(text))
        fig = best_per_learner_figure(study)
        if fig is not None:
            save_plotly_graph_object(study, fig, graph_object_id=PLOT_ID)


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    """wsgiref's server with a thread per request, as optuna-dashboard's own command uses."""

    daemon_threads = True


class _ThreadedServer6(_ThreadedServer):
    address_family = socket.AF_INET6


def listen(storage: Any, host: str, port: int) -> WSGIServer:
    """optuna-dashboard's WSGI app (:func:`optuna_dashboard.wsgi`) on ``storage``, bound to
    ``host:port`` (port 0: a free port the system picks) and ready to serve.

    Raises:
        ConfigError: the port is in use, or ``host`` cannot be listened on.
    """
    from optuna_dashboard import wsgi

    server_class = _ThreadedServer6 if ":" in host else _ThreadedServer
    try:
        return make_server(host, port, wsgi(storage), server_class=server_class)
    except OSError as exc:
        raise _listen_error(exc, host, port) from None


def _listen_error(exc: OSError, host: str, port: int) -> ConfigError:
    if exc.errno in (errno.EADDRINUSE, 48, 10048):  # address in use (Linux, macOS, Windows)
        return ConfigError(f"port {port} on {host} is already in use; pass another --port "
                           "(0 picks a free one).")
    return ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); check --host "
                       "and --port.")


class _DebugLog(io.TextIOBase):
    """A text stream whose lines go to automl's debug log."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("dashboard: %s", text.rstrip())
        return len(text)


def serve(server: WSGIServer) -> None:
    """Serve until Ctrl-C or SIGTERM, then close the server.

    What the server prints (a line per request, a browser's dropped connection) goes to the
    debug log (``--debug``), not the console.
    """
    # Ctrl-C stops the server even where SIGINT was ignored (a job started in the background);
    # SIGTERM stops it the same way
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    old_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with contextlib.redirect_stderr(_DebugLog()):
            server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        server.server_close()


def _url(host: str, port: int) -> str:
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def main(args: argparse.Namespace) -> int:
    """Entry point of ``automl dashboard``."""
    host = getattr(args, "host", None) or "127.0.0.1"
    port = getattr(args, "port", 8080)
    if port is None or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--port got {port!r}; give a port number from 1 to 65535 (0 picks a "
                          "free one).")
    run = open_run(args.run)
    study = load_study(run)
    server = listen(optuna_internals.storage_of(study), host, int(port))
    if not getattr(args, "no_annotate", False):
        try:
            annotate_study(study, run)
        except Exception as exc:  # noqa: BLE001 - a read-only storage is still served
            log.warning("could not add the run note to the study (%s); serving it as it is",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    bound_port = server.server_address[1]
    study_id = optuna_internals.storage_of(study).get_study_id_from_name(run.study_name)
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    state_text = ", ".join(f"{n} {s}" for s, n in states.items()) or "no trials yet"
    url = f"{_url(host, bound_port)}/dashboard/studies/{study_id}"
    if host not in LOCAL_HOSTS:
        log.warning("the dashboard listens on %s: anyone who can reach this machine can view, edit "
                    "and delete the study (there is no login)", host)
    print(f"optuna-dashboard: study '{run.study_name}' ({len(trials)} trials: {state_text}) "
          f"at {url}", flush=True)
    log.info("serving %s on %s:%d; press Ctrl-C to stop", run.storage_url, host, bound_port)
    serve(server)
    log.info("dashboard stopped")
    return 0
