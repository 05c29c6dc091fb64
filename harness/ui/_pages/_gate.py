"""The Gate page: the gate's decisions about the run, rule by rule with their evidence, and the promotions."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from harness.ui._pages._common import esc, verdict_chip
from harness.ui.views._cached import q_decisions, q_promotions
from harness.ui.views._runs import RunRow


def page_gate(url: str, run: RunRow | None) -> None:
    st.header("Gate")
    decisions = q_decisions(url, run.id if run else None)
    if not decisions:
        st.info("No gate decision about this run yet: `tunegate gate --policy POLICY.yaml --candidate RUN/TRIAL`.")
    for d in decisions:
        with st.container(border=True):
            line = (
                f"**{verdict_chip(d.verdict)}** (exit {d.exit_code}) · **{esc(d.closeness)}** · candidate "
                f"{esc(d.candidate)} vs {esc(d.baseline or '—')} · policy "
                f"{esc(d.policy_name or d.policy_path)} · {esc(d.created_at)}" + (" · promoted" if d.promoted else "")
            )
            {"promote": st.success, "reject": st.error}.get(d.verdict, st.warning)(line)
            st.caption(f"reason: {esc(d.reason)}")
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "rule": r.name,
                            "result": r.result,
                            "flips to change": "—" if r.flips_to_change is None else str(r.flips_to_change),
                            "evidence": r.message,
                        }
                        for r in d.rules
                    ]
                ),
                hide_index=True,
                key=f"gate_rules_{d.id}",
            )
            if d.numerics and not d.numerics_recorded:
                st.caption("numerics: not recorded (scored before tunegate kept them)")
            elif d.numerics:
                base, cand = d.numerics.get("baseline", {}), d.numerics.get("candidate", {})
                if d.numerics_differ:
                    st.warning(f"scored under different numerics: {esc(', '.join(d.numerics_differ))}")
                st.dataframe(
                    pd.DataFrame(
                        [
                            {
                                "numerics": k,
                                "baseline": base.get(k, "—"),
                                "candidate": cand.get(k, "—"),
                                "differs": "⚠️" if k in d.numerics_differ else "",
                            }
                            for k in sorted(set(base) | set(cand))
                        ]
                    ),
                    hide_index=True,
                    key=f"gate_numerics_{d.id}",
                )
            with st.expander("evidence (numbers behind each rule)"):
                for r in d.rules:
                    st.text(f"{r.result}: {r.name}")
                    st.json(r.evidence, expanded=False)
    st.subheader("Promotion history")
    proms = q_promotions(url)
    if not proms:
        st.caption("Nothing has been promoted in this store.")
        return
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "#": p.id,
                    "current": "●" if p.current else "",
                    "kind": p.kind,
                    "model (trial)": p.trial,
                    "replaced": p.previous or "—",
                    "decision": p.decision_id,
                    "verdict": p.verdict or "—",
                    "by": p.promoted_by,
                    "reason": p.reason,
                    "at": p.created_at,
                }
                for p in proms
            ]
        ),
        hide_index=True,
        key="promotions",
    )
