"""Gate decisions and promotions: a decision and the promotion it makes recorded together, amending a decision
the gate could not complete, rollbacks, and which model is promoted now."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from harness.base._errors import UserError
from harness.store._connection import _Connection, _get
from harness.store._tables import GateDecision, Promotion, Trial


class _Decisions(_Connection):
    """Recording and reading gate decisions and promotions."""

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


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return os.environ.get("GITHUB_ACTOR") or f"{user}@{socket.gethostname()}"
