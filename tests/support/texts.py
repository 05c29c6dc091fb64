"""Prompts and (context, continuation) pairs of mixed lengths that the generation and scoring tests share: short
and long, an empty continuation, repeated contexts, so batches mix lengths and padding."""

from __future__ import annotations

PROMPTS = [
    "Hi",
    "What is the capital of France? Answer in one word.",
    "List three colours, then three animals, then three numbers, separated by commas, please.",
    "2 + 2 =",
    "Tell me a story",
    "a b c d e f g h i j k l m n o p",
    "Why?",
]

PAIRS = [
    ("The capital of France is", " Paris"),
    ("The capital of France is", " Lyon"),
    ("The capital of France is", " a large city on the Seine"),
    ("2 + 2 =", " 4"),
    ("2 + 2 =", " 5"),
    ("Hello", "world"),
    ("Once upon a time there was a", " little girl who lived in a village near the sea"),
    ("x", ""),
    ("Question: which is larger, 7 or 9?\nAnswer:", " 9"),
]
