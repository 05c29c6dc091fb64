"""Build DPO preference pairs for the json_extract task from its training file.

    python examples/data/make_json_extract_prefs.py            # writes examples/data/json_extract_prefs.jsonl

chosen   = the compact JSON answer the task asks for;
rejected = the same facts in a form the task forbids, cycling through three styles the base model
           actually produces: pretty-printed JSON, a chatty answer around a code block, and prose.
Deterministic: the same train.jsonl always gives the same file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "suites" / "json_extract" / "train.jsonl"
OUT = Path(__file__).resolve().parent / "json_extract_prefs.jsonl"


def rejected(answer: dict, style: int) -> str:
    if style == 0:
        return json.dumps(answer, indent=2)
    if style == 1:
        return "Sure! Here is the extracted information:\n```json\n" + json.dumps(answer, indent=2) + "\n```"
    return f"The person's name is {answer['name']}, they are {answer['age']} years old and live in {answer['city']}."


def build(train: Path = TRAIN) -> list[dict[str, str]]:
    rows = []
    for i, line in enumerate(train.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        answer = json.loads(row["completion"])
        rows.append(
            {
                "prompt": row["prompt"],
                "chosen": json.dumps(answer, separators=(",", ":")),
                "rejected": rejected(answer, i % 3),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=TRAIN)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = build(args.train)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} preference pairs written to {args.out}")


if __name__ == "__main__":
    main()
