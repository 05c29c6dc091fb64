"""Scorers: one registry, and the modules that register into it (text, structured, instructions, choice,
python, safety, judge). Importing this package registers every built-in scorer."""

from harness.scorers import (  # importing them registers the built-in scorers
    _choice,
    _instructions,
    _judge,
    _python,
    _safety,
    _structured,
    _text,
)
from harness.scorers._judge import compare_evaluations, compare_pairwise, request_text, summarize_pairwise
from harness.scorers._judge_client import (
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_MODEL,
    Judge,
    JudgeConfig,
    OpenAIBackend,
    clear_memory_cache,
    using_store,
)
from harness.scorers._judge_verdicts import (
    Call,
    PairCase,
    PairVerdict,
    RubricCase,
    VerdictError,
    parse_score,
    parse_winner,
)
from harness.scorers._registry import MetricKind, Scorer, ScorerParamError, build, is_binary, kind, names
from harness.scorers._safety import (
    LABELS_PATH,
    advbench_to_suite,
    classifier_accuracy,
    classify,
    harmbench_to_suite,
    is_refusal,
    read_labels,
    xstest_to_suites,
)
from harness.scorers._structured import last_number
