"""Runs, their trials and the models the trials produce: creating and updating them, their training steps,
and finding them by id, name or reference (`RUN/TRIAL`, `t<id>`, a model name)."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from harness.base._errors import UserError
from harness.base._kinds import UNSHAPED
from harness.store._connection import _get, _get_or_create, _lock_trial, _redacted, _row_id
from harness.store._run_lock import _RunLock
from harness.store._tables import ModelRow, Run, TrainStep, Trial, now


class _Runs(_RunLock):
    """Runs, trials, models and training steps: written by the run, read by every command."""

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

    def update_run_folder(self, run_id: int, folder: str) -> None:
        with self.session() as s:
            _get(s, Run, run_id).folder = folder

    def finish_run(self, run_id: int, status: str) -> None:
        with self.session() as s:
            run = _get(s, Run, run_id)
            run.status, run.finished_at = status, now()

    def latest_run(self, name: str, plan_hash: str | None = None) -> Run | None:
        self.mark_interrupted()
        with self.reading() as s:
            q = select(Run).where(Run.name == name)
            if plan_hash:
                q = q.where(Run.plan_hash == plan_hash)
            return s.scalars(q.order_by(Run.id.desc())).first()

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

    def _find_run(self, ref: str) -> Run | None:
        try:
            return self.get_run(ref)
        except UserError:
            return None

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

    def train_steps(self, trial_id: int) -> list[TrainStep]:
        with self.reading() as s:
            return list(s.scalars(select(TrainStep).where(TrainStep.trial_id == trial_id).order_by(TrainStep.step)))

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


def model_name(run: Run, trial: Trial) -> str:
    """The name of the model a (non-baseline) trial produced: RUN_NAME#RUN_ID/TRIAL."""
    return f"{run.name}#{run.id}/{trial.name}"
