"""The results store: every run, trial, model, suite item, output and score as plain rows (SQLAlchemy 2).

A SQLite file by default (WAL; writers take the lock up front with ``BEGIN IMMEDIATE`` so several
trials and processes can write at once and nothing is lost); any SQLAlchemy URL, such as
``postgresql+psycopg://user@host/db``, for a team sharing one store. The schema is versioned with
alembic (``harness/store/migrations``): opening a store upgrades an empty or older one to the newest
revision and refuses one written by a newer tunegate. ``harness/store/migrations/README.md`` documents
every table.

Every write is one transaction: a crash or an exception in the middle leaves nothing half written.
Everything the report, the app and the gate show is read from here.
"""

from __future__ import annotations

import getpass
import json
import math
import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from harness.base._errors import UserError
from harness.base._kinds import UNSHAPED
from harness.base._stats import mean_stderr
from harness.redact import redact, redact_json
from harness.store import migrations
from harness.store._engine import _timeout, display_url, make_engine, store_url
from harness.store._tables import (
    Evaluation,
    EvaluationLike,
    GateDecision,
    ItemRow,
    JudgeCall,
    Metric,
    ModelRow,
    Output,
    Promotion,
    Run,
    Score,
    SuiteRow,
    TrainStep,
    Trial,
    now,
)

T = TypeVar("T")


class Store:
    """Open (creating or upgrading) a store. `timeout` is how long a writer waits for a lock (seconds;
    default $TUNEGATE_STORE_TIMEOUT or 60). `must_exist`: a SQLite file that is not there is a UserError, not
    a new empty store (for commands that read)."""

    def __init__(self, store: str | None = None, *, timeout: float | None = None, must_exist: bool = False) -> None:
        self.url = store_url(store, must_exist=must_exist)
        self.where = display_url(self.url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.timeout = _timeout(timeout)
        try:
            self.engine = make_engine(self.url, self.timeout)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise UserError(f"not a usable store URL: {exc}", file=self.where) from None
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(self.engine.execution_options(tunegate_write=True), expire_on_commit=False)
        in_memory = self.is_sqlite and make_url(self.url).database in (None, "", ":memory:")
        with self._translate_errors("open"):
            migrations.upgrade(self.url, self.timeout, where=self.where, engine=self.engine if in_memory else None)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One write transaction: everything inside commits together or not at all. On SQLite it takes
        the write lock at the start (BEGIN IMMEDIATE), so concurrent writers queue instead of failing."""
        with self._translate_errors("write to"), self._writer() as s, s.begin():
            yield s

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """One read transaction (a consistent snapshot; never blocks writers on WAL SQLite or PostgreSQL)."""
        with self._translate_errors("read"), self._reader() as s, s.begin():
            yield s

    @contextmanager
    def _translate_errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except IntegrityError:
            raise
        except (OperationalError, DatabaseError) as exc:
            raise UserError(self._describe(exc, doing), file=self.where) from None

    def _describe(self, exc: DatabaseError, doing: str) -> str:
        msg = str(exc.orig).strip() if exc.orig is not None else str(exc)
        low = msg.lower()
        if "locked" in low or "busy" in low:
            return f"cannot {doing} the store: it is locked by another process (waited {self.timeout:g}s): {msg}"
        if "not a database" in low or "malformed" in low or "corrupt" in low:
            return f"cannot {doing} the store: the file is corrupted or not a tunegate store ({msg})"
        return f"cannot {doing} the store: {msg}"

    def dispose(self) -> None:
        self.engine.dispose()

    def create_run(
        self,
        name: str,
        plan: dict[str, Any],
        plan_hash: str,
        base_model: str,
        folder: str | Callable[[int], str],
        git_sha: str = "",
    ) -> int:
        """A new run, driven by this process. `folder` may be a function of the new run's id: it is then
        recorded in the same transaction, so no run is ever on record without its folder."""
        with self.session() as s:
            run = Run(
                name=name,
                plan=plan,
                plan_hash=plan_hash,
                base_model=base_model,
                folder=folder if isinstance(folder, str) else "",
                git_sha=git_sha,
                driver_pid=os.getpid(),
                driver_host=socket.gethostname(),
                driver_heartbeat=now(),
            )
            s.add(run)
            s.flush()
            if not isinstance(folder, str):
                run.folder = folder(run.id)
            return run.id

    def reopen_run(self, run_id: int) -> str | None:
        """A resumed run: running again, driven by this process, which takes the run's lock (`claim_run`)."""
        return self.claim_run(run_id)

    def claim_run(self, run_id: int, *, stale_after: float | None = None) -> str | None:
        """Take the run's lock: this process drives it from now on (status running, its pid, host and a fresh
        heartbeat), in one write transaction (SQLite's BEGIN IMMEDIATE, a row lock on PostgreSQL), so of two
        processes resuming one run, one wins. While another live process drives the run, a UserError naming it
        (exit 2). A driver that is gone (its pid dead on this host) or silent (no heartbeat for `stale_after`
        seconds, default $TUNEGATE_RUN_LOCK_STALE_S or 600, from any host) loses the lock: the return value
        then says whose lock was taken over; None when the run was not held."""
        stale_after = run_lock_stale_after() if stale_after is None else stale_after
        me, host = os.getpid(), socket.gethostname()
        with self.session() as s:
            run = s.scalars(select(Run).where(Run.id == run_id).with_for_update()).first()
            if run is None:
                raise UserError(f"no runs row {run_id} in the store")
            took_over = None
            holder = run.driver_pid, run.driver_host
            if run.status == "running" and holder != (me, host) and run.driver_pid is not None:
                age = _age_seconds(run.driver_heartbeat or run.created_at)
                who = f"process {run.driver_pid} on {run.driver_host}"
                if run.driver_host == host and not _process_alive(run.driver_pid):
                    took_over = f"took over run {run_id} from {who}: that process is gone"
                elif age is not None and age > stale_after:
                    took_over = (
                        f"took over run {run_id} from {who}: its last heartbeat is {age:.0f} s old "
                        f"(stale after {stale_after:g} s)"
                    )
                else:
                    beat = f"; its last heartbeat was {age:.0f} s ago" if age is not None else ""
                    raise UserError(
                        f"run {run_id} ({run.name}) is being run by {who}{beat}; wait for it to "
                        f"finish or stop it (a lock silent for {stale_after:g} s is taken over: "
                        "TUNEGATE_RUN_LOCK_STALE_S)",
                        file=self.where,
                        field="--resume",
                    )
            run.status, run.finished_at = "running", None
            run.driver_pid, run.driver_host, run.driver_heartbeat = me, host, now()
            return took_over

    def heartbeat(self, run_id: int) -> bool:
        """This process still drives the run: refresh its heartbeat. False if another process took the run."""
        with self.session() as s:
            run = s.get(Run, run_id)
            if run is None or (run.driver_pid, run.driver_host) != (os.getpid(), socket.gethostname()):
                return False
            run.driver_heartbeat = now()
            return True

    def update_run_folder(self, run_id: int, folder: str) -> None:
        with self.session() as s:
            _get(s, Run, run_id).folder = folder

    def latest_run(self, name: str, plan_hash: str | None = None) -> Run | None:
        self.mark_interrupted()
        with self.reading() as s:
            q = select(Run).where(Run.name == name)
            if plan_hash:
                q = q.where(Run.plan_hash == plan_hash)
            return s.scalars(q.order_by(Run.id.desc())).first()

    def mark_interrupted(self) -> list[int]:
        """Mark `interrupted` every running run whose driver process on this host is gone (killed, crashed),
        and its unfinished trials with it. Returns their ids. Runs driven from other hosts are left alone."""
        host = socket.gethostname()
        with self.reading() as s:
            running = s.execute(
                select(Run.id, Run.driver_pid).where(
                    Run.status == "running", Run.driver_host == host, Run.driver_pid.is_not(None)
                )
            ).all()
        gone = [(run_id, pid) for run_id, pid in running if not _process_alive(pid)]
        if not gone:
            return []
        with self.session() as s:
            for run_id, pid in gone:
                run = s.get(Run, run_id)
                if run is None or run.status != "running" or run.driver_pid != pid:
                    continue  # resumed by another process meanwhile
                run.status, run.finished_at = "interrupted", now()
                for trial in s.scalars(select(Trial).where(Trial.run_id == run_id, Trial.status == "running")):
                    trial.status = "interrupted"
        return [run_id for run_id, _ in gone]

    def finish_run(self, run_id: int, status: str) -> None:
        with self.session() as s:
            run = _get(s, Run, run_id)
            run.status, run.finished_at = status, now()

    def ensure_trial(self, run_id: int, name: str, arm: str, arm_type: str, config: dict[str, Any]) -> Trial:
        """The trial `name` of the run, created (with its model row) if it does not exist yet."""
        with self.session() as s:
            trial = s.scalars(select(Trial).where(Trial.run_id == run_id, Trial.name == name)).first()
            if trial is not None:
                return trial
            try:
                with s.begin_nested():
                    trial = Trial(run_id=run_id, name=name, arm=arm, arm_type=arm_type, config=config)
                    s.add(trial)
                    s.flush()
            except IntegrityError:  # another process created it a moment ago (PostgreSQL)
                return s.scalars(select(Trial).where(Trial.run_id == run_id, Trial.name == name)).one()
            run = _get(s, Run, run_id)
            if arm_type in UNSHAPED:
                model = _get_or_create(
                    s, ModelRow, {"name": run.base_model}, {"kind": "base", "base_model": run.base_model}
                )
            else:
                model = _get_or_create(
                    s,
                    ModelRow,
                    {"name": model_name(run, trial)},
                    {"kind": arm_type, "base_model": run.base_model, "trial_id": trial.id},
                )
            trial.model_id = model.id
            s.flush()
            return trial

    def update_trial(self, trial_id: int, **fields: Any) -> None:
        with self.session() as s:
            trial = _get(s, Trial, trial_id)
            for k, v in fields.items():
                if not hasattr(Trial, k):
                    raise AttributeError(f"trials has no column '{k}'")
                setattr(trial, k, _redacted(v) if k == "error" else v)
            if "folder" in fields and trial.model_id is not None:
                model = s.get(ModelRow, trial.model_id)
                if model is not None and model.trial_id == trial.id:
                    model.path = fields["folder"]

    def add_train_steps(self, trial_id: int, steps: list[dict[str, Any]]) -> None:
        with self.session() as s:
            _lock_trial(s, trial_id)
            s.query(TrainStep).filter(TrainStep.trial_id == trial_id).delete()
            s.add_all(
                TrainStep(
                    trial_id=trial_id,
                    **{
                        k: row.get(k)
                        for k in ("step", "loss", "lr", "grad_norm", "tokens_per_second", "peak_memory_gib")
                    },
                )
                for row in steps
            )

    def save_evaluation(self, trial_id: int, result: EvaluationLike) -> int:
        """Store one SuiteResult (outputs, per-item scores, aggregates) in a single transaction; a
        second evaluation of the same trial on the same suite version replaces the first."""
        suite = result.suite
        with self.session() as s:
            _lock_trial(s, trial_id)  # a concurrent save for the same trial waits, then replaces ours
            suite_row = _get_or_create(
                s,
                SuiteRow,
                {"name": suite.name, "version": suite.version},
                {
                    "kind": suite.spec.kind,
                    "category": suite.spec.category,
                    "primary_metric": suite.spec.primary,
                    "spec": json.loads(suite.spec.model_dump_json()),
                },
                then=lambda row: s.add_all(
                    ItemRow(suite_id=row.id, item_key=item.id, data=json.loads(item.model_dump_json()))
                    for item in suite.items
                ),
            )
            item_ids = dict(
                s.execute(select(ItemRow.item_key, ItemRow.id).where(ItemRow.suite_id == suite_row.id)).all()
            )
            unknown = [r.item_id for r in result.items if r.item_id not in item_ids]
            if unknown:
                raise ValueError(f"results for items not in suite {suite.name}@{suite.version}: {unknown[:5]}")
            old = s.scalars(
                select(Evaluation).where(Evaluation.trial_id == trial_id, Evaluation.suite_id == suite_row.id)
            ).first()
            if old is not None:
                s.query(JudgeCall).filter(JudgeCall.evaluation_id == old.id).update({"evaluation_id": None})
                for table in (Score, Output, Metric):
                    s.query(table).filter(table.evaluation_id == old.id).delete()
                s.delete(old)
                s.flush()
            ev = Evaluation(
                trial_id=trial_id,
                suite_id=suite_row.id,
                n_items=len(result.items),
                seconds=result.seconds,
                numerics=_numerics(getattr(result, "numerics", None)),
            )
            s.add(ev)
            s.flush()
            for r in result.items:
                iid = item_ids[r.item_id]
                s.add(Output(evaluation_id=ev.id, item_id=iid, prompt=r.prompt, output=r.output))
                s.add_all(
                    Score(
                        evaluation_id=ev.id,
                        item_id=iid,
                        metric=m,
                        value=_finite(v),
                        detail=_redacted(getattr(r, "details", {}).get(m)),
                    )
                    for m, v in r.scores.items()
                )
            kinds = result.kinds
            s.add_all(
                Metric(
                    evaluation_id=ev.id,
                    metric=m,
                    value=mean,
                    stderr=se,
                    n=n,
                    higher_is_better=kinds[m].higher_is_better if m in kinds else None,
                    binary=kinds[m].binary if m in kinds else None,
                    corpus=getattr(kinds[m], "corpus", False) if m in kinds else None,
                )
                for m, (mean, se, n) in _aggregates(result).items()
            )
            s.flush()
            return ev.id

    def record_judge_call(
        self,
        key: str,
        model: str,
        request: dict[str, Any],
        response: str | None,
        status: str,
        error: str | None = None,
        evaluation_id: int | None = None,
        item_id: int | None = None,
    ) -> int:
        """One judge request and its outcome; credentials in any of it (a key in the base URL, a key echoed in
        an error body) are redacted before they reach the store."""
        with self.session() as s:
            call = JudgeCall(
                key=key,
                model=redact(model),
                request=redact_json(request),
                response=None if response is None else redact(response),
                status=status,
                error=None if error is None else redact(error),
                evaluation_id=evaluation_id,
                item_id=item_id,
            )
            s.add(call)
            s.flush()
            return call.id

    def judge_calls(self, key: str | None = None, evaluation_id: int | None = None) -> list[JudgeCall]:
        with self.reading() as s:
            q = select(JudgeCall)
            if key is not None:
                q = q.where(JudgeCall.key == key)
            if evaluation_id is not None:
                q = q.where(JudgeCall.evaluation_id == evaluation_id)
            return list(s.scalars(q.order_by(JudgeCall.id)))

    def cached_judge_response(self, key: str) -> str | None:
        """The latest successful answer to an identical judge request, if any."""
        with self.reading() as s:
            return s.scalars(
                select(JudgeCall.response)
                .where(JudgeCall.key == key, JudgeCall.status == "ok")
                .order_by(JudgeCall.id.desc())
            ).first()

    def runs(
        self, name: str | None = None, status: str | None = None, limit: int = 50, model: str | None = None
    ) -> list[Run]:
        self.mark_interrupted()
        with self.reading() as s:
            q = select(Run)
            if name:
                q = q.where(Run.name.contains(name, autoescape=True))
            if status:
                q = q.where(Run.status == status)
            if model:
                q = q.where(Run.base_model.contains(model, autoescape=True))
            return list(s.scalars(q.order_by(Run.id.desc()).limit(limit)))

    def get_run(self, ref: str | int) -> Run:
        self.mark_interrupted()
        with self.reading() as s:
            run = (
                (s.get(Run, row_id) if (row_id := _row_id(ref)) else None)
                if str(ref).isdigit()
                else s.scalars(select(Run).where(Run.name == str(ref)).order_by(Run.id.desc())).first()
            )
        if run is None:
            raise UserError(f"no run '{ref}' in the store", file=self.where)
        return run

    def trials(self, run_id: int) -> list[Trial]:
        with self.reading() as s:
            return list(s.scalars(select(Trial).where(Trial.run_id == run_id).order_by(Trial.id)))

    def get_trial(self, ref: str) -> Trial:
        """'RUN/TRIAL' (run id or name, trial name) or 't<id>'."""
        if ref.startswith("t") and ref[1:].isdigit():
            with self.reading() as s:
                trial = s.get(Trial, row_id) if (row_id := _row_id(ref[1:])) else None
        else:
            run_ref, _, trial_name = ref.rpartition("/")
            if not run_ref:
                raise UserError(f"'{ref}' is not a trial reference: use RUN/TRIAL (e.g. demo/lora) or t<id>")
            run = self.get_run(run_ref)
            with self.reading() as s:
                trial = s.scalars(select(Trial).where(Trial.run_id == run.id, Trial.name == trial_name)).first()
        if trial is None:
            raise UserError(f"no trial '{ref}' in the store", file=self.where)
        return trial

    def resolve_trial(self, ref: str) -> Trial:
        """The trial a user means by `ref`: 't<id>', 'RUN/TRIAL', a model name (the latest finished
        trial that scored it, e.g. `tunegate eval MODEL`), or a run whose only candidate is one trial."""
        ref = ref.strip()
        if re.fullmatch(r"t\d+", ref):
            return self.get_trial(ref)
        run_ref, _, trial_name = ref.rpartition("/")
        run = self._find_run(run_ref) if run_ref else None
        with self.reading() as s:
            if run is not None:
                trial = s.scalars(select(Trial).where(Trial.run_id == run.id, Trial.name == trial_name)).first()
                if trial is not None:
                    return trial
            model = s.scalars(select(ModelRow).where(ModelRow.name == ref)).first()
            if model is not None:  # a model name may contain '/', like a hub id
                trials = list(s.scalars(select(Trial).where(Trial.model_id == model.id).order_by(Trial.id.desc())))
                finished = [t for t in trials if t.status == "finished"]
                if trials:
                    return (finished or trials)[0]
        if run is not None:
            names = ", ".join(t.name for t in self.trials(run.id)) or "none"
            raise UserError(
                f"run '{run_ref}' (#{run.id}) has no trial '{trial_name}' (its trials: {names})", file=self.where
            )
        whole = self._find_run(ref) if not run_ref else None
        if whole is not None:
            trials = self.trials(whole.id)
            candidates = [t for t in trials if t.arm_type not in UNSHAPED] or trials
            if len(candidates) == 1:
                return candidates[0]
            raise UserError(
                f"run '{ref}' has {len(candidates)} candidate trials "
                f"({', '.join(t.name for t in candidates) or 'none'}); name one as RUN/TRIAL",
                file=self.where,
            )
        raise UserError(
            f"no trial, model or run '{ref}' in the store (use RUN/TRIAL, t<id>, a model name "
            "or a run with one candidate trial)",
            file=self.where,
        )

    def _find_run(self, ref: str) -> Run | None:
        try:
            return self.get_run(ref)
        except UserError:
            return None

    def get_model(self, ref: str | int) -> ModelRow:
        with self.reading() as s:
            model = (
                (s.get(ModelRow, row_id) if (row_id := _row_id(ref)) else None)
                if str(ref).isdigit()
                else s.scalars(select(ModelRow).where(ModelRow.name == str(ref))).first()
            )
        if model is None:
            raise UserError(f"no model '{ref}' in the store", file=self.where)
        return model

    def models(self) -> list[ModelRow]:
        with self.reading() as s:
            return list(s.scalars(select(ModelRow).order_by(ModelRow.id)))

    def train_steps(self, trial_id: int) -> list[TrainStep]:
        with self.reading() as s:
            return list(s.scalars(select(TrainStep).where(TrainStep.trial_id == trial_id).order_by(TrainStep.step)))

    def evaluations(self, trial_id: int) -> list[tuple[Evaluation, SuiteRow]]:
        """Every evaluation of a trial with its suite version, by suite name, oldest first."""
        with self.reading() as s:
            return [
                (ev, suite)
                for ev, suite in s.execute(
                    select(Evaluation, SuiteRow)
                    .join(SuiteRow)
                    .where(Evaluation.trial_id == trial_id)
                    .order_by(SuiteRow.name, Evaluation.id)
                )
            ]

    def suite_item_count(self, suite_id: int) -> int:
        with self.reading() as s:
            return s.scalar(select(func.count()).select_from(ItemRow).where(ItemRow.suite_id == suite_id)) or 0

    def metrics(self, evaluation_id: int) -> dict[str, Metric]:
        with self.reading() as s:
            return {m.metric: m for m in s.scalars(select(Metric).where(Metric.evaluation_id == evaluation_id))}

    def item_scores(self, evaluation_id: int, metric: str) -> dict[str, float | None]:
        with self.reading() as s:
            rows = s.execute(
                select(ItemRow.item_key, Score.value)
                .join(ItemRow, Score.item_id == ItemRow.id)
                .where(Score.evaluation_id == evaluation_id, Score.metric == metric)
                .order_by(ItemRow.id)
            )
            return {k: v for k, v in rows}

    def scored_metrics(self, evaluation_id: int) -> list[str]:
        """Every metric with per-item scores in an evaluation."""
        with self.reading() as s:
            return sorted(s.scalars(select(Score.metric).where(Score.evaluation_id == evaluation_id).distinct()))

    def item_rows(self, evaluation_id: int) -> list[dict[str, Any]]:
        """Per item: key, item data, prompt, output and every score."""
        with self.reading() as s:
            out: dict[int, dict[str, Any]] = {}
            for item, o in s.execute(
                select(ItemRow, Output)
                .join(Output, Output.item_id == ItemRow.id)
                .where(Output.evaluation_id == evaluation_id)
                .order_by(ItemRow.id)
            ):
                out[item.id] = {
                    "item": item.item_key,
                    "data": item.data,
                    "prompt": o.prompt,
                    "output": o.output,
                    "scores": {},
                }
            for sc in s.scalars(select(Score).where(Score.evaluation_id == evaluation_id).order_by(Score.id)):
                out[sc.item_id]["scores"][sc.metric] = sc.value
            return list(out.values())

    def record_decision(self, **fields: Any) -> int:
        return self.record_gate_decision(None, **fields)[0]

    def record_gate_decision(self, promote_evidence: dict[str, Any] | None, **fields: Any) -> tuple[int, int | None]:
        """Record a gate decision; with `promote_evidence`, also promote its candidate, in the same
        transaction (a promotion is never on record without its decision, nor a passing decision
        without its promotion). Returns (decision id, promotion id or None)."""
        with self.session() as s:
            d = GateDecision(decided_by=_who(), **fields)
            s.add(d)
            s.flush()
            promotion = None
            if promote_evidence is not None:
                promotion = self._promote(
                    s,
                    d.candidate_trial_id,
                    d.id,
                    evidence=promote_evidence,
                    reason=fields.get("reason", ""),
                    kind="promote",
                )
            return d.id, promotion

    def amend_gate_decision(self, decision_id: int, *, verdict: str, exit_code: int, reason: str) -> None:
        """A recorded decision the gate could not complete (an output file failed after recording): its row
        takes the verdict and exit code the process returns, and a promotion it made is withdrawn, in one
        transaction (a gate that did not exit 0 promoted nothing)."""
        with self.session() as s:
            self._lock_promotions(s)
            d = _get(s, GateDecision, decision_id)
            d.verdict, d.exit_code, d.reason = verdict, exit_code, reason
            if exit_code != 0:
                for p in s.scalars(select(Promotion).where(Promotion.decision_id == decision_id)):
                    s.delete(p)

    def promote(
        self, trial_id: int, decision_id: int | None = None, *, evidence: dict[str, Any] | None = None, reason: str = ""
    ) -> int:
        with self.session() as s:
            return self._promote(s, trial_id, decision_id, evidence=evidence or {}, reason=reason, kind="promote")

    def rollback(self, reason: str = "") -> Promotion:
        """Promote the model that was promoted before the current one (records a `rollback` promotion)."""
        with self.session() as s:
            self._lock_promotions(s)
            stack = _promotion_stack(s.scalars(select(Promotion).order_by(Promotion.id)))
            if len(stack) < 2:
                raise UserError(
                    "nothing to roll back to: "
                    + ("no model has been promoted" if not stack else "only one model has ever been promoted"),
                    file=self.where,
                )
            target = _get(s, Trial, stack[-2])
            p = Promotion(
                trial_id=target.id,
                previous_trial_id=stack[-1],
                decision_id=None,
                promoted_by=_who(),
                kind="rollback",
                model_id=target.model_id,
                evidence={"rolled_back_trial_id": stack[-1]},
                reason=reason or "rollback",
            )
            s.add(p)
            s.flush()
            return p

    def _promote(
        self,
        s: Session,
        trial_id: int | None,
        decision_id: int | None,
        *,
        evidence: dict[str, Any],
        reason: str,
        kind: str,
    ) -> int:
        if trial_id is None:
            raise ValueError("a promotion needs a trial")
        self._lock_promotions(s)
        last = s.scalars(select(Promotion).order_by(Promotion.id.desc())).first()
        if last is not None and last.trial_id == trial_id:
            return last.id  # already the promoted model: nothing changes
        trial = _get(s, Trial, trial_id)
        p = Promotion(
            trial_id=trial_id,
            decision_id=decision_id,
            previous_trial_id=last.trial_id if last else None,
            promoted_by=_who(),
            kind=kind,
            model_id=trial.model_id,
            evidence=evidence,
            reason=reason,
        )
        s.add(p)
        s.flush()
        return p.id

    def _lock_promotions(self, s: Session) -> None:
        """Serialize promotion writers (SQLite already holds the write lock from BEGIN IMMEDIATE)."""
        if self.engine.dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(7126354)"))

    def promoted_trial(self) -> Trial | None:
        with self.reading() as s:
            last = s.scalars(select(Promotion).order_by(Promotion.id.desc())).first()
            return s.get(Trial, last.trial_id) if last else None

    def decisions(self, limit: int = 50) -> list[GateDecision]:
        with self.reading() as s:
            return list(s.scalars(select(GateDecision).order_by(GateDecision.id.desc()).limit(limit)))

    def get_decision(self, decision_id: int) -> GateDecision | None:
        with self.reading() as s:
            return s.get(GateDecision, decision_id)

    def promotions(self) -> list[Promotion]:
        with self.reading() as s:
            return list(s.scalars(select(Promotion).order_by(Promotion.id.desc())))


def model_name(run: Run, trial: Trial) -> str:
    """The name of the model a (non-baseline) trial produced: RUN_NAME#RUN_ID/TRIAL."""
    return f"{run.name}#{run.id}/{trial.name}"


def _process_alive(pid: int) -> bool:
    """Whether process `pid` on this host still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the signal said it exists
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


DEFAULT_RUN_LOCK_STALE_S = 600.0


def run_lock_stale_after() -> float:
    """Seconds without a heartbeat after which a run's lock may be taken over ($TUNEGATE_RUN_LOCK_STALE_S)."""
    raw = os.environ.get("TUNEGATE_RUN_LOCK_STALE_S", DEFAULT_RUN_LOCK_STALE_S)
    try:
        seconds = float(raw)
    except ValueError:
        raise UserError(f"TUNEGATE_RUN_LOCK_STALE_S must be a number of seconds, not '{raw}'") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"TUNEGATE_RUN_LOCK_STALE_S must be a positive number of seconds, not '{raw}'")
    return seconds


def _age_seconds(stamp: str | None) -> float | None:
    """Seconds since an ISO timestamp written by `now()` (None if there is none or it cannot be read)."""
    if not stamp:
        return None
    try:
        then = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return (datetime.now(UTC) - then).total_seconds()


def _redacted(text: str | None) -> str | None:
    return None if text is None else redact(text)


def _row_id(ref: str | int) -> int | None:
    """A row id from digits; None for one no database column can hold (so it is simply not found)."""
    value = int(ref)
    return value if 0 < value < 2**63 else None


def _get(s: Session, table: type[T], key: int) -> T:
    row = s.get(table, key)
    if row is None:
        raise UserError(f"no {getattr(table, '__tablename__', table.__name__)} row {key} in the store")
    return row


def _lock_trial(s: Session, trial_id: int) -> None:
    """Row-lock a trial for the rest of the transaction (PostgreSQL; SQLite's writers already hold the
    database lock), so replacing its rows is never interleaved with another writer doing the same."""
    if s.execute(select(Trial.id).where(Trial.id == trial_id).with_for_update()).first() is None:
        raise UserError(f"no trial t{trial_id} in the store")


def _get_or_create(
    s: Session, table: type[T], keys: dict[str, Any], values: dict[str, Any], then: Callable[[T], None] | None = None
) -> T:
    """The row with `keys`, inserted if missing. Safe against a concurrent insert of the same keys:
    the loser's savepoint rolls back and it reads the winner's row."""
    q = select(table).filter_by(**keys)
    row = s.scalars(q).first()
    if row is not None:
        return row
    try:
        with s.begin_nested():
            row = table(**keys, **values)
            s.add(row)
            s.flush()
            if then is not None:
                then(row)
                s.flush()
            return row
    except IntegrityError:
        return s.scalars(q).one()


def _promotion_stack(promotions: Iterable[Promotion]) -> list[int]:
    """Replay promotions oldest first: a promotion pushes its trial, a rollback pops the current one."""
    stack: list[int] = []
    for p in promotions:
        if p.kind == "rollback" and stack:
            stack.pop()
            if not stack or stack[-1] != p.trial_id:
                stack.append(p.trial_id)
        else:
            stack.append(p.trial_id)
    return stack


def _aggregates(result: EvaluationLike) -> dict[str, tuple[float, float, int]]:
    """The result's aggregates; where one is not a finite number (a failed score among the items), the
    mean, standard error and count of the scores that exist instead, or no row when none does."""

    out: dict[str, tuple[float, float, int]] = {}
    for metric, (mean, se, n) in result.metrics.items():
        if _finite(mean) is not None and _finite(se) is not None:
            out[metric] = (float(mean), float(se), int(n))
            continue
        values = [float(v) for r in result.items if (v := _finite(r.scores.get(metric))) is not None]
        if values:
            mean, se = mean_stderr(values)
            out[metric] = (mean, se, len(values))
    return out


def _numerics(record: Any) -> dict[str, str] | None:
    """A suite result's numerics record as stored: text values, or NULL when it has none."""
    if not isinstance(record, Mapping) or not record:
        return None
    return {str(k): "" if v is None else str(v) for k, v in record.items()}


def _finite(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if v == v and v not in (float("inf"), float("-inf")) else None


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return os.environ.get("GITHUB_ACTOR") or f"{user}@{socket.gethostname()}"


def check_integrity(store: Store) -> None:
    """Raise a UserError if a SQLite store fails `PRAGMA integrity_check`."""
    if store.is_sqlite:
        with store.reading() as s:
            result = s.execute(text("PRAGMA integrity_check")).scalar()
        if result != "ok":
            raise UserError(f"store is corrupted: {result}", file=store.where)
