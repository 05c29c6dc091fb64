"""Regenerate the arithmetic regression suite (deterministic): python suites/arithmetic/generate.py

36 short arithmetic questions in six kinds (addition, subtraction with negative results,
multiplication, exact division, decimals and percentages, two-step word problems), each asking
for just the number. References are computed here, never typed by hand.
"""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path

SUFFIX = " Answer with just the number."
NAMES = ["Ana", "Ben", "Chloe", "Dev", "Eli", "Fatima", "Gus", "Hiro", "Iris", "Jamal", "Kira", "Luis"]
THINGS = ["apples", "stickers", "marbles", "books", "pencils", "stamps", "shells", "cards"]


def number(x: Fraction) -> int | float:
    """An exact int when whole, else the (terminating) decimal."""
    return int(x) if x.denominator == 1 else float(x)


def items(rng: random.Random) -> list[dict]:
    out: list[dict] = []

    def add(kind: str, prompt: str, answer: Fraction) -> None:
        out.append(
            {
                "id": f"arith-{len(out):02d}",
                "prompt": prompt + SUFFIX,
                "reference": number(answer),
                "meta": {"kind": kind},
            }
        )

    for _ in range(6):
        a, b = rng.randint(12, 989), rng.randint(12, 989)
        add("addition", f"What is {a} + {b}?", Fraction(a + b))
    for _ in range(6):
        a, b = rng.randint(5, 400), rng.randint(5, 400)
        add("subtraction", f"What is {a} - {b}?", Fraction(a - b))
    for _ in range(6):
        a, b = rng.randint(3, 99), rng.randint(3, 29)
        add("multiplication", f"What is {a} × {b}?" if rng.random() < 0.5 else f"What is {a} * {b}?", Fraction(a * b))
    for _ in range(6):
        b, q = rng.randint(2, 19), rng.randint(3, 60)
        add("division", f"What is {b * q} divided by {b}?", Fraction(q))
    for i in range(6):
        if i % 2 == 0:
            pct, base = rng.choice([10, 20, 25, 50, 75, 5]), rng.randint(2, 40) * 20
            add("percentage", f"What is {pct}% of {base}?", Fraction(pct * base, 100))
        else:
            a, b = Fraction(rng.randint(11, 999), 10), Fraction(rng.randint(11, 999), 100)
            add("decimals", f"What is {float(a)} + {float(b)}?", a + b)
    for _ in range(6):
        name, thing = rng.choice(NAMES), rng.choice(THINGS)
        start, bought, gave = rng.randint(5, 40), rng.randint(2, 6), rng.randint(1, 9)
        per = rng.randint(3, 12)
        add(
            "word_problem",
            f"{name} has {start} {thing}. {name} buys {bought} packs of {per} {thing} and then gives "
            f"away {gave}. How many {thing} does {name} have now?",
            Fraction(start + bought * per - gave),
        )
    return out


def main() -> None:
    path = Path(__file__).resolve().parent / "items.jsonl"
    rows = items(random.Random(20240611))
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} items to {path}")


if __name__ == "__main__":
    main()
