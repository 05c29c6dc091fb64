"""The results store: tables, engines (SQLite or PostgreSQL), migrations, reads/writes and exports."""

from harness.store import migrations
from harness.store._engine import store_url
from harness.store._export import export_results
from harness.store._store import Store, check_integrity
from harness.store._tables import (
    Base,
    Evaluation,
    ItemRow,
    JudgeCall,
    Metric,
    Output,
    Promotion,
    Score,
    SuiteRow,
    Trial,
)
