"""What the tuner adapter's `trial_end` costs as an experiment grows (docs/tuning.md).

    python -m benchmarks tuner-db --trials 100 250 500 --rounds 25

For each size, an experiment folder whose db/nni.sqlite (NNI 3.0's own schema, read from
the installed nni_node) and log/nnimanager.log hold that many ended trials, written row
for row as NNI's manager writes them (`ManagerRecord`). Then, in interleaved rounds, one
more trial ends in each experiment and each way of learning about it is timed: `full`,
reading the whole experiment (`records.load`, what every trial_end did before), and
`incremental`, the adapter's `TrialTable.refresh`, which reads only the rows added since
its last read. Prints one JSON line per size: median milliseconds and full/incremental.
"""
from __future__ import annotations

import json
import re
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import nni_node
from nni.common.serializer import dump
from nni.runtime.tuner_command_channel import CommandType

SCHEMA = re.search(r"const createTables = `(.*?)`;", (Path(nni_node.__file__).parent / "core" / "sqlDatabase.js")
                   .read_text(), re.S).group(1)
SPACE_SAMPLE = {**{f"weight{i}": 0.5 for i in range(1, 7)}, "dropout_rate": 0.2, "learning_rate": 1e-3}
FINAL_KEYS = ("iou", "accuracy", "loss", "jacard", "sparsity", "dense_iou", "dense_accuracy", "params", "flops")


class ManagerRecord:
    """An experiment folder written as NNI 3.0's manager writes it: the rows of
    nniDataStore/sqlDatabase.js and the lines nnimanager.js logs. Each method returns
    the command the manager then sends the dispatcher, as `MsgDispatcherBase.run` hands it
    to `process_command` (the payload loaded from JSON)."""

    def __init__(self, folder: str | Path, exp_id: str = "bench0001"):
        self.folder = Path(folder)
        for sub in ("db", "log", "checkpoint"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        # autocommit: each row is there once written, as with the manager's node-sqlite3
        self.db = sqlite3.connect(self.folder / "db" / "nni.sqlite", isolation_level=None)
        self.db.executescript(SCHEMA)
        self.db.execute("insert into ExperimentProfile values (?,?,?,?,?,?,?,?)",
                        (json.dumps({"trialConcurrency": 1, "tuner": {"className": "segmodel.experiment.tuner.InformedTuner"}}),
                         exp_id, 0, self._now(), None, str(self.folder.parent), 0, 0))
        self.log = (self.folder / "log" / "nnimanager.log").open("a")
        self.sequence = 0
        self.hyper: dict[str, str] = {}     # trial id -> its hyperParameters.value (what TRIAL_END carries)
        self.seq_of: dict[str, int] = {}    # trial id -> its sequence id

    @staticmethod
    def _now() -> int:
        return int(time.time() * 1000)

    def _log(self, message: str) -> None:
        self.log.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] INFO (NNIManager) {message}\n")
        self.log.flush()

    def _event(self, event: str, trial_id: str, data: str | None, with_detail: bool = True) -> None:
        url = f"file://localhost:{self.folder}/environments/local-env/trials/{trial_id}" if with_detail else None
        self.db.execute("insert into TrialJobEvent values (?,?,?,?,?,?,?,?)",
                        (self._now(), trial_id, event, data, url, self.seq_of[trial_id] if with_detail else None,
                         None, "local-env" if with_detail else None))

    def submit(self, content: str) -> str:
        """The dispatcher's NewTrialJob content (`_pack_parameter`) becomes a WAITING trial; returns its id."""
        trial_id = f"T{self.sequence:04d}x"
        self.hyper[trial_id], self.seq_of[trial_id] = content, self.sequence
        self.sequence += 1
        (self.folder / "environments" / "local-env" / "trials" / trial_id).mkdir(parents=True)  # the trial's folder
        self._log(f"NNIManager received command from dispatcher: TR, {content}")
        self._log(f"submitTrialJob: form: {{ sequenceId: {self.seq_of[trial_id]}, hyperParameters: "
                  f"{{ value: '{content}', index: 0 }}, placementConstraint: {{ type: 'None', gpus: [] }} }}")
        self._event("WAITING", trial_id, content)
        return trial_id

    def running(self, trial_id: str) -> None:
        self._log(f"Trial job {trial_id} status changed from WAITING to RUNNING")
        self._event("RUNNING", trial_id, None)

    def metric(self, trial_id: str, kind: str, value, sequence: int = 0) -> tuple[CommandType, dict]:
        """A metric the trial sent (nni.trial -> trial_command_channel): stored, then forwarded."""
        pid = json.loads(self.hyper[trial_id])["parameter_id"]
        data = dump({"parameter_id": pid, "trial_job_id": trial_id, "type": kind, "sequence": sequence,
                     "value": dump(value)})
        metrics = json.loads(data)
        self.db.execute("insert into MetricData values (?,?,?,?,?,?)",
                        (self._now(), trial_id, metrics["parameter_id"], kind, sequence, json.dumps(metrics["value"])))
        return CommandType.ReportMetricData, json.loads(data)

    def end(self, trial_id: str, status: str) -> tuple[CommandType, dict]:
        """The manager's status poll sees the trial end: stored, then TRIAL_END."""
        self._log(f"Trial job {trial_id} status changed from RUNNING to {status}")
        self._event(status, trial_id, None)
        return CommandType.TrialEnd, {"trial_job_id": trial_id, "event": status, "hyper_params": self.hyper[trial_id]}

    def killed(self, trial_id: str) -> None:
        """The assessor's KillTrialJob, which only the manager's log records."""
        self._log(f"NNIManager received command from dispatcher: KI, {json.dumps(trial_id)}")

    def close(self) -> None:
        self.db.close()
        self.log.close()

    def trial(self, parameter_id: int, epochs: int = 7, stopped: bool = False) -> list[tuple[CommandType, dict]]:
        """One whole trial as the default experiment runs it: `epochs` intermediate results,
        then a final one and SUCCEEDED, or (stopped) a kill after 3 and USER_CANCELED."""
        params = dict(SPACE_SAMPLE, learning_rate=1e-4 * (1 + parameter_id % 90))
        trial_id = self.submit(dump({"parameter_id": parameter_id, "parameter_source": "algorithm",
                                     "parameters": params, "parameter_index": 0}))
        self.running(trial_id)
        sent = [self.metric(trial_id, "PERIODICAL", {"default": 0.5 + 0.01 * e, "iou": 0.4}, e)
                for e in range(3 if stopped else epochs)]
        if stopped:
            self.killed(trial_id)
            return [*sent, self.end(trial_id, "USER_CANCELED")]
        final = {"default": 0.8, **{k: 0.5 for k in FINAL_KEYS}}
        return [*sent, self.metric(trial_id, "FINAL", final), self.end(trial_id, "SUCCEEDED")]


def add_arguments(p) -> None:
    p.add_argument("--trials", type=int, nargs="+", default=[100, 250, 500], help="experiment sizes")
    p.add_argument("--rounds", type=int, default=25, help="trials that end (and are timed) per size")


def measure(sizes: list[int], rounds: int) -> list[dict]:
    """One row per size. Every round ends one more trial in each experiment and times both
    reads of each, so a busy CPU slows all sizes and both reads alike."""
    from segmodel.experiment import records
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for n in sizes:
            record = ManagerRecord(Path(tmp) / f"bench{n:04d}")
            for pid in range(n):
                record.trial(pid, stopped=pid % 2 == 1)
            runs.append((n, record, records.TrialTable(record.folder).refresh(), {"full": [], "incremental": []}))
        for r in range(rounds):
            for n, record, table, times in runs:
                record.trial(n + r)
                for name, read in (("full", lambda folder=record.folder: records.load(folder)), ("incremental", table.refresh)):
                    t = time.perf_counter()
                    read()
                    times[name].append(time.perf_counter() - t)
        rows = []
        for n, record, table, times in runs:
            assert len(table.trials) == n + rounds
            full, inc = (statistics.median(times[k]) * 1000 for k in ("full", "incremental"))
            rows.append({"trials": n, "full_ms": round(full, 2), "incremental_ms": round(inc, 3),
                         "full_over_incremental": round(full / inc, 1),
                         "db_kb": (record.folder / "db" / "nni.sqlite").stat().st_size // 1024,
                         "log_kb": (record.folder / "log" / "nnimanager.log").stat().st_size // 1024})
            record.close()
    return rows


def main(args) -> int:
    for row in measure(args.trials, args.rounds):
        print(json.dumps(row), flush=True)
    return 0
