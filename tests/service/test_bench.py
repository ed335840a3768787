"""bench/service_overhead.py runs end to end on a tiny input (its speed is not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_service_overhead_bench_prints_its_json() -> None:
    command = [sys.executable, str(ROOT / "bench" / "service_overhead.py"), "--calls", "20", "--warmup", "2"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    report = json.loads(completed.stdout)
    assert set(report) == {"direct", "service", "added_p50_ms", "added_p99_ms", "c32"}
    assert set(report["c32"]) == {"direct", "service", "added_p50_ms", "added_p99_ms"}
    for part in (report, report["c32"]):
        for side in ("direct", "service"):
            assert set(part[side]) == {"p50_ms", "p99_ms", "per_s"} and part[side]["per_s"] > 0
