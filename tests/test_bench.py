"""The benchmark scripts run end to end on a tiny input (their speed is not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"


@pytest.mark.skipif(not SCIFACT.exists(), reason="../shared/data/scifact is not beside this checkout")
def test_embedding_throughput_bench_prints_its_json() -> None:
    command = [
        sys.executable,
        str(ROOT / "bench" / "embedding_throughput.py"),
        "--local-texts", "20", "--local-naive-texts", "5",
        "--remote-texts", "50", "--remote-naive-texts", "5", "--latency-ms", "1",
        "--backends", "torch_fp32,onnx_int8", "--backend-long-texts", "6", "--backend-short-texts", "12",
        "--backend-ndcg-docs", "0", "--concurrent-callers", "12", "--concurrent-rounds", "1",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(completed.stdout)
    assert set(report) >= {"local", "remote", "backends", "default_backend", "concurrent"}
    assert report["default_backend"] == "openvino_bf16"  # the measured default (README, "Inference backends")
    assert report["local"]["framework_backend"] == "openvino_bf16"
    torch_fp32 = report["backends"]["torch_fp32"]
    assert torch_fp32["long_per_s"] > 0 and torch_fp32["short_per_s"] > 0 and torch_fp32["ndcg_at_10"] is None
    onnx = report["backends"]["onnx_int8"]  # measured, or the reason it could not be
    assert ("long_per_s" in onnx) != ("error" in onnx)
    assert report["local"]["texts"] == 20 and report["local"]["framework_per_s"] > 0
    assert report["remote"]["texts"] == 50 and report["remote"]["naive_per_s"] > 0
    concurrent = report["concurrent"]
    assert concurrent["callers"] == 12
    assert min(concurrent[key] for key in ("per_s", "batched_per_s", "one_at_a_time_per_s")) > 0


def test_vector_store_bench_prints_its_json() -> None:
    command = [
        sys.executable,
        str(ROOT / "bench" / "vector_store.py"),
        "--points", "600", "--tenants", "3", "--dims", "16", "--queries", "10",
        "--local-mode-points", "300", "--local-mode-queries", "5",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(completed.stdout)
    assert (report["points"], report["tenants"], report["dims"]) == (600, 3, 16)
    for backend in ("embedded", "qdrant_local_mode"):
        assert report[backend]["upsert_per_s"] > 0 and report[backend]["search_p99_ms"] > 0


@pytest.mark.skipif(not SCIFACT.exists(), reason="../shared/data/scifact is not beside this checkout")
def test_retrieval_quality_bench_prints_its_json() -> None:
    command = [sys.executable, str(ROOT / "bench" / "retrieval_quality.py"), "--max-docs", "60"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    report = json.loads(completed.stdout)
    assert report["dataset"] == "scifact" and report["queries"] == 300
    assert report["failed"] == 0 and 0.0 <= report["ndcg_at_10"] <= 1.0
