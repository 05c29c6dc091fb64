"""The Advisor page: the questionnaire, the recommendation with its reasons, and the experiment plan it writes."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from advisor import advise
from advisor.errors import AdvisorInputError
from advisor.planner import plan_yaml, write_plan
from advisor.questions import QUESTIONS, Answers, should_ask
from harness.plan._schema import Plan
from harness.ui._pages._common import esc


def page_advisor() -> None:

    st.header("Advisor")
    st.caption(
        "Answer the questions; the advisor recommends prompting, RAG or fine-tuning, says why and what "
        "would change its mind, and writes an experiment plan that tests the recommendation."
    )
    with st.form("advisor_form"):
        values: dict[str, Any] = {}
        cols = st.columns(2)
        for i, q in enumerate(QUESTIONS):
            values[q.key] = question_widget(cols[i % 2], q)
        st.divider()
        cols = st.columns(2)
        train = (
            cols[0]
            .text_input("Training JSONL to audit (optional; a path on the app's machine)", key="adv_train")
            .strip()
        )
        model = (
            cols[1]
            .text_input("Base model for the plan (empty: one of the size you gave)", value="", key="adv_model")
            .strip()
        )
        submitted = st.form_submit_button("Recommend", type="primary")
    if submitted:
        answers = {k: v for k, v in values.items()}
        for q in QUESTIONS:  # a question that does not apply is left unknown; Answers fills in what is implied
            if not should_ask(q, answers):
                answers[q.key] = None
        try:
            result = advise(answers, train or None, probe=False)
            notes: list[str] = []
            plan = write_plan(
                result.recommendation, result.answers, train or "data/train.jsonl", model=model or None, notes=notes
            )
            if not train:
                notes.append("no training file was given: set data.train in the plan before running it.")
            st.session_state["advice"] = (result, plan, plan_yaml(plan, result.recommendation, notes), notes)
        except AdvisorInputError as exc:
            st.session_state.pop("advice", None)
            st.error(f"Invalid answer: {esc(exc)}")
    if "advice" in st.session_state:
        render_advice(*st.session_state["advice"], answers_model=Answers)


def question_widget(col: Any, q: Any) -> Any:
    """Every question offers 'unknown' (an empty number box is unknown too); unknown is the default."""
    help_text = q.help + (f" (not used when {q.skip_if[0]} is {q.skip_if[1]})" if q.skip_if else "")
    key = f"adv_{q.key}"
    if q.type in ("choice", "bool"):
        choices = ["unknown", *(q.choices or ["yes", "no"])]
        return col.selectbox(q.prompt, choices, index=0, help=help_text, key=key)
    if q.type == "int":
        return col.number_input(
            q.prompt, min_value=0, value=None, step=1, placeholder="unknown", help=help_text, key=key
        )
    if q.type == "float":
        return col.number_input(
            q.prompt, min_value=0.0, value=None, step=0.01, format="%g", placeholder="unknown", help=help_text, key=key
        )
    raw = col.text_input(q.prompt, value="unknown", help=help_text, key=key)
    return raw.strip()  # optional_float: 'unknown', 'no limit' or a number; the Answers model validates it


def render_advice(result: Any, plan: dict[str, Any], yaml_text: str, notes: list[str], answers_model: Any) -> None:
    rec = result.recommendation
    cols = st.columns(3)
    cols[0].metric("Recommendation", rec.primary)
    cols[1].metric("Confidence", f"{rec.confidence:.0%}")
    cols[2].metric("Arms to test", len(rec.arms))
    st.markdown("**Arms the plan tests:** " + ", ".join(esc(a) for a in rec.arms))
    for o in result.overrides:
        st.warning(
            f"Using the audited {esc(o.field)} = {esc(o.audited)} instead of the stated {esc(o.stated)}: {esc(o.why)}"
        )
    st.subheader("Options")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "option": opt,
                    "score": score,
                    "status": "primary"
                    if opt == rec.primary
                    else "vetoed"
                    if opt in rec.vetoed
                    else "test"
                    if opt in rec.arms
                    else "",
                }
                for opt, score in sorted(rec.scores.items(), key=lambda kv: -kv[1])
            ]
        ),
        hide_index=True,
        key="adv_options",
    )
    st.subheader("Why (rules that fired)")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "rule": f.id,
                    "effect": ", ".join(f"{k} {v:+g}" for k, v in f.effect.items()) or ("note" if not f.veto else ""),
                    "vetoes": ", ".join(f.veto),
                    "reason": f.reason,
                    "source": f.source,
                }
                for f in rec.fired
            ]
        ),
        hide_index=True,
        key="adv_rules",
    )
    st.subheader("What would change it")
    if rec.changers:
        for c in rec.changers:
            st.markdown(f"- {esc(c.text)}")
    else:
        st.caption("No single answer change moves the primary recommendation.")
    if rec.controls_reason:
        st.caption(f"Controls: {esc(rec.controls_reason)}")
    if result.audit is not None:
        st.subheader("Training data audit")
        st.dataframe(
            pd.DataFrame([{"fact": k, "value": str(v)} for k, v in result.audit.facts().items()]),
            hide_index=True,
            key="adv_audit",
        )
    st.subheader("Experiment plan")
    for note in notes:
        st.caption(f"note: {esc(note)}")
    try:
        Plan.model_validate(plan)
    except Exception as exc:  # noqa: BLE001 - show why, the plan is still useful as a draft
        st.warning(f"The plan does not validate yet: {esc(exc)}")
    st.code(yaml_text, language="yaml")
    st.download_button("Download plan.yaml", yaml_text, file_name="plan.yaml", mime="text/yaml", key="adv_dl")
    st.caption("Run it with `tunegate run plan.yaml`.")
