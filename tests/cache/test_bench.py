"""bench/cache.py runs end to end on a tiny input (its speed is not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"


@pytest.mark.skipif(not SCIFACT.exists(), reason="../shared/data/scifact is not beside this checkout")
def test_cache_bench_prints_its_json() -> None:
    backends = "memory,sqlite,redis" if os.environ.get("PULSE_AI_TEST_REDIS_URL") else "memory,sqlite"
    command = [
        sys.executable, str(ROOT / "bench" / "cache.py"),
        "--texts", "60", "--local-texts", "20", "--scifact-records", "10", "--latency-ms", "1",
        "--backends", backends,
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    report = json.loads(completed.stdout)
    assert set(report) == set(backends.split(","))
    for backend in report.values():
        assert set(backend) >= {"local", "remote", "mixed", "reindex_unchanged_speedup"}
        assert backend["local"]["texts"] == 20 and backend["local"]["warm_per_s"] > 0
        assert backend["remote"]["texts"] == 60 and backend["remote"]["latency_ms"] == 1
        assert backend["mixed"]["hit_ratio"] == 0.9 and backend["mixed"]["per_s"] > 0
        assert backend["reindex"]["records"] == 10 and backend["reindex_unchanged_speedup"] > 0
