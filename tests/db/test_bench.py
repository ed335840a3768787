"""bench/usage_ledger.py runs end to end on a tiny input (its speed is not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.db.conftest import postgres_admin_url

ROOT = Path(__file__).resolve().parents[2]


def test_usage_ledger_bench_prints_its_json() -> None:
    command = [
        sys.executable, str(ROOT / "bench" / "usage_ledger.py"),
        "--calls", "60", "--concurrency", "8", "--serial-calls", "5",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(completed.stdout)
    assert set(report) == {"sqlite", "postgres"}
    backends = ["sqlite", "postgres"] if postgres_admin_url() else ["sqlite"]
    for backend in backends:
        result = report[backend]
        assert (result["calls"], result["concurrency"]) == (60, 8)
        assert result["calls_per_s"] > 0 and {"p50_added_ms", "p99_added_ms"} <= set(result)
        assert result["verified"] is True  # one ledger row per call, budgets spent exactly
    if not postgres_admin_url():
        assert "skipped" in report["postgres"]
