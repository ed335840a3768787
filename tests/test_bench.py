"""The benchmark scripts run end to end on a tiny input (their speed is not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_embedding_throughput_bench_prints_its_json() -> None:
    command = [
        sys.executable,
        str(ROOT / "bench" / "embedding_throughput.py"),
        "--local-texts", "20", "--local-naive-texts", "5",
        "--remote-texts", "50", "--remote-naive-texts", "5", "--latency-ms", "1",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(completed.stdout)
    assert set(report) == {"local", "remote"}
    assert report["local"]["texts"] == 20 and report["local"]["framework_per_s"] > 0
    assert report["remote"]["texts"] == 50 and report["remote"]["naive_per_s"] > 0
