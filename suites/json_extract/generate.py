"""Regenerate the demo task's data (deterministic): python suites/json_extract/generate.py

Contact extraction to compact JSON. The train and test splits use disjoint first names, last
names and cities, so the test measures the format and the copying skill, not memorised values.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

FIRST = [
    "Maria",
    "James",
    "Aisha",
    "Chen",
    "Olga",
    "Pedro",
    "Fatima",
    "Liam",
    "Yuki",
    "Noah",
    "Amara",
    "Ivan",
    "Sofia",
    "Mateo",
    "Priya",
    "Lucas",
    "Zara",
    "Omar",
    "Elena",
    "Kofi",
    "Hana",
    "Diego",
    "Nina",
    "Ravi",
    "Lena",
    "Tomas",
    "Mina",
    "Arjun",
    "Clara",
    "Felix",
    "Ines",
    "Jonas",
    "Leila",
    "Marco",
    "Nadia",
    "Oscar",
]
LAST = [
    "Lopez",
    "Smith",
    "Khan",
    "Wang",
    "Petrova",
    "Silva",
    "Haddad",
    "Murphy",
    "Tanaka",
    "Becker",
    "Okafor",
    "Novak",
    "Rossi",
    "Garcia",
    "Patel",
    "Martin",
    "Ali",
    "Hassan",
    "Popescu",
    "Mensah",
    "Kim",
    "Torres",
    "Berg",
    "Sharma",
    "Fischer",
    "Dvorak",
    "Park",
    "Iyer",
    "Moreau",
    "Weber",
    "Costa",
    "Lund",
    "Nasser",
]
CITY = [
    "Lisbon",
    "Boston",
    "Lahore",
    "Shanghai",
    "Kazan",
    "Recife",
    "Beirut",
    "Dublin",
    "Osaka",
    "Hamburg",
    "Lagos",
    "Prague",
    "Turin",
    "Seville",
    "Pune",
    "Lyon",
    "Nairobi",
    "Cairo",
    "Sofia",
    "Accra",
    "Busan",
    "Quito",
    "Oslo",
    "Delhi",
    "Vienna",
    "Brno",
    "Incheon",
    "Chennai",
    "Nantes",
    "Zurich",
    "Porto",
    "Malmo",
    "Amman",
]
JOBS = ["nurse", "teacher", "engineer", "chef", "pilot", "lawyer", "farmer", "designer", "baker", "plumber"]
TEMPLATES = [
    "{name}, {age}, lives in {city} and works as a {job}.",
    "Meet {name} from {city}. {pronoun} is {age} years old.",
    "{name} ({age}) moved to {city} last spring to work as a {job}.",
    "Our new {job} is {name}, aged {age}, based in {city}.",
    "Born {age} years ago, {name} now calls {city} home.",
    "{city} resident {name} turned {age} this year.",
    "Contact: {name}. Age: {age}. Location: {city}.",
    "I met {name} in {city}; {pronoun_l} is {age} and a {job}.",
]
INSTRUCTION = "Extract the person's name, age and city from the text. Answer with compact JSON only."


SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "ten",
    "vo",
    "sa",
    "bri",
    "do",
    "el",
    "fa",
    "gu",
    "ha",
    "jo",
    "ki",
    "lu",
    "ma",
    "ne",
    "or",
    "pa",
    "qui",
    "ro",
    "si",
    "ta",
    "ul",
    "ve",
    "wi",
    "ya",
    "zo",
    "bel",
    "cor",
    "dan",
]


def invented(rng: random.Random, n: int, parts: tuple[int, int]) -> list[str]:
    """Made-up capitalised words, so training teaches copying from the text, not a list of names."""
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(*parts))).capitalize())
    return sorted(out)


def split(values: list[str], rng: random.Random) -> tuple[list[str], list[str]]:
    values = values[:]
    rng.shuffle(values)
    cut = int(len(values) * 0.75)
    return values[:cut], values[cut:]


def rows(n: int, first: list[str], last: list[str], city: list[str], rng: random.Random, prefix: str) -> list[dict]:
    out = []
    for i in range(n):
        name = f"{rng.choice(first)} {rng.choice(last)}"
        age, town = rng.randint(19, 79), rng.choice(city)
        pronoun = rng.choice(["She", "He", "They"])
        text = (
            rng.choice(TEMPLATES)
            .format(name=name, age=age, city=town, job=rng.choice(JOBS), pronoun=pronoun, pronoun_l=pronoun.lower())
            .replace("They is", "They are")
            .replace("they is", "they are")
        )
        answer = json.dumps({"name": name, "age": age, "city": town}, separators=(",", ":"))
        out.append({"id": f"{prefix}{i:03d}", "prompt": f"{INSTRUCTION}\nText: {text}", "reference": answer})
    return out


def main() -> None:
    rng = random.Random(20261125)
    (f_tr, f_te), (l_tr, l_te), (c_tr, c_te) = split(FIRST, rng), split(LAST, rng), split(CITY, rng)
    here = Path(__file__).parent
    # train mixes real and invented names and cities; test uses only held-out real ones
    f_tr += invented(rng, 150, (2, 3))
    l_tr += invented(rng, 150, (2, 4))
    c_tr += invented(rng, 100, (2, 3))
    train = rows(300, f_tr, l_tr, c_tr, rng, "train-")
    test = rows(40, f_te, l_te, c_te, rng, "test-")
    with (here / "train.jsonl").open("w") as f:
        for r in train:
            f.write(json.dumps({"prompt": r["prompt"], "completion": r["reference"]}) + "\n")
    with (here / "items.jsonl").open("w") as f:
        for r in test:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
