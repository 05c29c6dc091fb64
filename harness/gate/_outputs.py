"""The gate's outputs: JUnit XML, JSON and a Markdown PR comment."""

from __future__ import annotations

import json
import math
import re
import socket
import xml.etree.ElementTree as ET
from typing import Any

from harness.base._errors import printable
from harness.gate._closeness import phrase
from harness.gate._decide import Decision
from harness.gate._numerics import recorded


def to_junit(decision: Decision) -> str:
    """JUnit XML: testsuites > testsuite > one testcase per rule, with <failure> (rejected) or <error>
    (missing evidence) children, as CI test reporters expect."""
    failures = sum(1 for r in decision.rules if not r.passed and not r.error)
    errors = sum(1 for r in decision.rules if r.error)
    counts = {"tests": str(len(decision.rules)), "failures": str(failures), "errors": str(errors), "time": "0"}
    root = ET.Element("testsuites", name=f"tunegate gate: {decision.policy}", **counts)
    suite = ET.SubElement(
        root,
        "testsuite",
        name=f"gate {decision.candidate}",
        skipped="0",
        timestamp=decision.created_at,
        hostname=socket.gethostname(),
        **counts,
    )
    props = ET.SubElement(suite, "properties")
    for key in ("verdict", "exit_code", "candidate", "baseline", "decision_id", "promotion_id", "flips_to_change"):
        ET.SubElement(
            props, "property", name=key, value="" if getattr(decision, key) is None else str(getattr(decision, key))
        )
    for side, record in decision.numerics.items():
        for key, value in record.items():
            ET.SubElement(props, "property", name=f"numerics.{side}.{key}", value=value)
    if decision.numerics_differ:
        ET.SubElement(props, "property", name="numerics_differ", value=",".join(decision.numerics_differ))
    for r in decision.rules:
        case = ET.SubElement(
            suite, "testcase", classname="tunegate.gate.safety" if r.safety else "tunegate.gate", name=r.name, time="0"
        )
        if not r.error:
            ET.SubElement(
                ET.SubElement(case, "properties"),
                "property",
                name="flips_to_change",
                value="" if r.flips_to_change is None else str(r.flips_to_change),
            )
        if r.error:
            ET.SubElement(case, "error", message=r.message, type="MissingEvidence").text = json.dumps(r.evidence)
        elif not r.passed:
            ET.SubElement(
                case, "failure", message=r.message, type="SafetyRegression" if r.safety else "Regression"
            ).text = json.dumps(r.evidence)
        else:
            ET.SubElement(case, "system-out").text = r.message
    ET.SubElement(suite, "system-out").text = f"{decision.verdict} (exit {decision.exit_code}): {decision.reason}"
    for element in root.iter():  # XML 1.0 cannot hold control characters: every value shown as escapes
        element.attrib = {k: printable(v) for k, v in element.attrib.items()}
        if element.text is not None:
            element.text = printable(element.text, keep="\n\t")
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


# the marks that can start markup inside a table cell: code spans, emphasis, links, images, HTML, entities, cells
_MD_PUNCTUATION = re.compile(r"([\\`*_\[\]<>|!&~#])")


def _md(text: Any) -> str:
    """Plain text for Markdown (a table cell): the marks that start markup backslash-escaped, so a name or
    message can open no link, image, code span, HTML tag or table cell; on one line."""
    return _MD_PUNCTUATION.sub(r"\\\1", printable(" ".join(str(text).split())))


def _code(text: Any) -> str:
    """Text as a Markdown code span that nothing in it can close: its fence is longer than any run of backticks
    inside (CommonMark), and `|` is escaped for GitHub's tables."""
    flat = printable(" ".join(str(text).split())).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", flat)), default=0) + 1)
    return f"{fence} {flat} {fence}"


def fmt(x: Any, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


MARKDOWN_MARKER = "<!-- tunegate-gate -->"


def to_markdown(decision: Decision) -> str:
    """A PR comment: verdict, one table row per rule with the evidence, and the reason."""
    icon = {"promote": "✅ PROMOTE", "reject": "❌ REJECT", "error": "⚠️ ERROR"}[decision.verdict]
    close = "" if decision.verdict == "error" else f" · {phrase(decision.verdict, decision.flips_to_change)}"
    lines = [
        MARKDOWN_MARKER,
        f"### tunegate gate: {icon} (exit {decision.exit_code}){close}",
        "",
        (
            f"Policy {_code(decision.policy)} · candidate {_code(decision.candidate)} · compared with "
            f"{_code(decision.baseline or '—')}"
        ),
        "",
        "| rule | result | flips to change | candidate | compared with | Δ [95% CI] | n | detail |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in decision.rules:
        status = "⚠️ error" if r.error else ("✅ pass" if r.passed else "❌ FAIL")
        flips = "—" if r.flips_to_change is None else str(r.flips_to_change)
        ev = r.evidence
        delta = (
            "—"
            if ev.get("delta") is None
            else f"{fmt(ev['delta'], True)} [{fmt(ev.get('ci_low'), True)}, {fmt(ev.get('ci_high'), True)}]"
        )
        lines.append(
            f"| {'🛡️ ' if r.safety else ''}{_md(r.name)} | {status} | {flips} | "
            f"{fmt(ev.get('candidate_mean'))} | {fmt(ev.get('baseline_mean'))} | {delta} | "
            f"{ev.get('paired_n', ev.get('n', '—'))} | {_md(r.message)} |"
        )
    lines += ["", f"**Reason:** {_md(decision.reason)}"]
    if decision.numerics and not recorded(decision.numerics):
        lines += ["", "<sub>numerics: not recorded (scored before tunegate kept them)</sub>"]
    elif decision.numerics:
        lines += [
            "",
            "<details><summary>Numerics"
            + (" (differ: " + _md(", ".join(decision.numerics_differ)) + ")" if decision.numerics_differ else "")
            + "</summary>",
            "",
            "| numerics | baseline | candidate |",
            "|---|---|---|",
        ]
        base, cand = decision.numerics.get("baseline", {}), decision.numerics.get("candidate", {})
        for key in sorted(set(base) | set(cand)):
            mark = " ⚠️" if key in decision.numerics_differ else ""
            lines.append(f"| {_md(key)}{mark} | {_md(base.get(key, '—'))} | {_md(cand.get(key, '—'))} |")
        lines += ["", "</details>", ""]
    if decision.decision_id is not None:
        lines.append(
            f"<sub>decision #{decision.decision_id}"
            + (f" · promotion #{decision.promotion_id}" if decision.promotion_id else "")
            + f" · {decision.created_at}</sub>"
        )
    return "\n".join(lines) + "\n"
