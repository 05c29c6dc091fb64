"""HellaSwag's own preprocessing (from lm-eval), so these items are shaped and scored like hellaswag."""

from lm_eval.tasks.hellaswag.utils import process_docs

__all__ = ["process_docs"]
