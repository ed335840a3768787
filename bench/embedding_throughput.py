"""Embedding throughput: the framework against raw encode (local) and one request per text (remote).

Prints one JSON object. The remote part runs the fake OpenAI-compatible server in its own process,
adding a fixed latency to every request, and talks to it through the real openai SDK.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.retrieval_quality import DATA, local_provider  # noqa: E402
from bench.retrieval_quality import run as run_retrieval  # noqa: E402
from pulse_ai import PulseAI, PulseAIError  # noqa: E402
from pulse_ai.catalog import DEFAULT_LOCAL_BACKEND  # noqa: E402
from pulse_ai.providers.local import load_default_model, load_sentence_transformer, resolve_model_path  # noqa: E402

# name -> (backend, precision); torch_fp32 is the reference
BACKENDS = {
    "torch_fp32": ("torch", "fp32"),
    "onnx_int8": ("onnx", "int8"),
    "openvino_int8": ("openvino", "int8"),
    "openvino_bf16": ("openvino", "bf16"),
    "openvino_fp32": ("openvino", "fp32"),
    "torch_bf16": ("torch", "bf16"),
}

WORDS = [
    "customer",
    "reported",
    "checkout",
    "latency",
    "dashboard",
    "query",
    "timeout",
    "index",
    "rebuild",
    "tenant",
    "billing",
    "export",
    "csv",
    "permission",
    "denied",
    "retry",
    "webhook",
    "queue",
    "backlog",
    "release",
    "regression",
    "memory",
    "leak",
    "cache",
    "invalidation",
]


def title_texts(count: int, seed: int = 7) -> list[str]:
    """Short texts only (3-15 words), where per-call overhead, not model compute, dominates."""
    import random

    rng = random.Random(seed)
    return [f"#{i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 15))) for i in range(count)]


def mixed_texts(count: int, seed: int = 7) -> list[str]:
    """Texts shaped like a tracker's records: 40% titles (3-15 words), 40% descriptions (20-80 words),
    20% long write-ups (100-400 words, past the local model's 256-token window)."""
    import random

    rng = random.Random(seed)
    texts = []
    for i in range(count):
        kind = rng.random()
        if kind < 0.4:
            length = rng.randint(3, 15)
        elif kind < 0.8:
            length = rng.randint(20, 80)
        else:
            length = rng.randint(100, 400)
        texts.append(f"#{i} " + " ".join(rng.choice(WORDS) for _ in range(length)))
    return texts


async def bench_local(count: int, naive_count: int, mix: str = "mixed") -> dict[str, float | int | str]:
    texts = title_texts(count) if mix == "titles" else mixed_texts(count)
    async with PulseAI.default() as ai:
        _, spec = ai.model("local/all-MiniLM-L6-v2")
        # the reference: torch fp32 text batches of sentence-transformers' default size
        model, _ = load_sentence_transformer(resolve_model_path(spec), "auto")
        *_, choice = load_default_model(resolve_model_path(spec), "auto")  # what the framework runs
        batch_size = 32  # sentence-transformers' default
        await ai.embed(texts[:64])  # warm up
        model.encode(texts[:64], batch_size=batch_size)

        started = time.perf_counter()
        model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
        raw = count / (time.perf_counter() - started)

        started = time.perf_counter()
        result = await ai.embed(texts)
        framework = count / (time.perf_counter() - started)
        assert len(result) == count

        started = time.perf_counter()
        for text in texts[:naive_count]:
            await ai.embed([text])
        naive = naive_count / (time.perf_counter() - started)
    return {
        "texts": count,
        "mix": mix,
        "framework_backend": f"{choice.backend}_{choice.precision}",
        "raw_encode_backend": "torch_fp32",
        "raw_encode_batch_size": batch_size,
        "raw_encode_per_s": round(raw, 1),
        "framework_per_s": round(framework, 1),
        "naive_per_s": round(naive, 1),
        "naive_texts": naive_count,
        "framework_vs_raw": round(framework / raw, 3),
        "framework_vs_naive": round(framework / naive, 1),
    }


async def bench_concurrent(callers: int, rounds: int, mix: str = "titles") -> dict[str, float | int | str]:
    """``callers`` single-text calls at once (each its own task, as the HTTP service makes them)
    through the real local provider, against one call of the same texts and against one call at a
    time. Each figure is the median of ``rounds``."""
    import statistics

    from pulse_ai.providers.local import SentenceTransformersProvider

    texts = title_texts(callers, seed=11) if mix == "titles" else mixed_texts(callers, seed=11)
    async with PulseAI.default() as ai:
        _, spec = ai.model("local/all-MiniLM-L6-v2")
        provider = ai.provider(spec.provider)
        assert isinstance(provider, SentenceTransformersProvider)
        await provider.embed(texts[:64], spec)  # warm up

        async def concurrent() -> None:
            results = await asyncio.gather(*(provider.embed([text], spec) for text in texts))
            assert all(result.vectors.shape[0] == 1 for result in results)

        async def batched() -> None:
            assert len(await provider.embed(texts, spec)) == callers

        async def one_at_a_time() -> None:
            for text in texts:
                await provider.embed([text], spec)

        async def rate(run: Callable[[], Awaitable[None]]) -> float:
            started = time.perf_counter()
            await run()
            return callers / (time.perf_counter() - started)

        measured: dict[str, list[float]] = {"per_s": [], "batched_per_s": [], "one_at_a_time_per_s": []}
        runs = {"per_s": concurrent, "batched_per_s": batched, "one_at_a_time_per_s": one_at_a_time}
        for round_ in range(rounds):
            # interleaved, so that a burst of load hits all three alike, and in turn first: the first
            # of a round meets a model idle since the last one-at-a-time call, the others a warm one
            order = list(runs)[round_ % 3 :] + list(runs)[: round_ % 3]
            for key in order:
                measured[key].append(await rate(runs[key]))
    report: dict[str, float | int | str] = {"callers": callers, "mix": mix, "rounds": rounds}
    report.update({key: round(statistics.median(values), 1) for key, values in measured.items()})
    report["vs_batched"] = round(float(report["per_s"]) / float(report["batched_per_s"]), 3)
    # each round's own ratio, then their median: a burst of load on a shared host cancels out
    paired = [ours / theirs for ours, theirs in zip(measured["per_s"], measured["batched_per_s"], strict=True)]
    report["vs_batched_paired"] = round(statistics.median(paired), 3)
    return report


async def bench_remote(base_url: str, count: int, naive_count: int, latency_ms: int) -> dict[str, float | int]:
    config = f"""
providers:
  openai:
    type: openai
    api_key: sk-bench
    base_url: {base_url}
    max_concurrency: 8
    models: [{{name: text-embedding-3-small}}]
"""
    texts = mixed_texts(count)
    async with PulseAI.from_yaml(config) as ai:
        await ai.embed(texts[:10], model="openai/text-embedding-3-small")  # connect, warm up
        started = time.perf_counter()
        result = await ai.embed(texts, model="openai/text-embedding-3-small")
        framework = count / (time.perf_counter() - started)
        assert result.vectors.shape == (count, 1536)

        started = time.perf_counter()
        for text in texts[:naive_count]:
            await ai.embed([text], model="openai/text-embedding-3-small")
        naive = naive_count / (time.perf_counter() - started)
    return {
        "texts": count,
        "latency_ms": latency_ms,
        "requests": result.usage.requests,
        "framework_per_s": round(framework, 1),
        "naive_per_s": round(naive, 1),
        "naive_texts": naive_count,
        "framework_vs_naive": round(framework / naive, 1),
    }


def scifact_texts(count: int) -> tuple[list[str], list[str]]:
    """The first ``count`` SciFact documents as long texts (title + abstract) and as titles."""
    long, short = [], []
    with (DATA / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            long.append(f"{doc['title']} {doc['text']}".strip())
            short.append(doc["title"])
            if len(long) == count:
                break
    return long, short


async def bench_backends(
    names: list[str], long_count: int, short_count: int, ndcg_docs: int | None, cache_dir: Path, rounds: int = 3
) -> dict[str, dict[str, object]]:
    """Every backend on the same texts through ``ai.embed``, side by side in one process: all loaded
    (and exported, on first use) and warmed up first, then ``rounds`` rounds in which each backend
    embeds the long documents and the titles in turn, so that a burst of load on this shared host
    hits all of them alike; each figure is the median over the rounds. Then SciFact nDCG@10 through
    the whole pipeline (``ndcg_docs``: a smaller corpus; 0: not measured), skipped for a backend
    slower than torch fp32 (never the default)."""
    import statistics

    long, _ = scifact_texts(long_count)
    _, short = scifact_texts(short_count)
    model = "local/all-MiniLM-L6-v2"
    report: dict[str, dict[str, object]] = {}
    clients: dict[str, PulseAI] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name in names:
            provider = local_provider(*BACKENDS[name], cache_dir)
            try:
                ai = await stack.enter_async_context(
                    PulseAI.from_yaml(f"providers: {{local: {provider}}}\ncache: {{enabled: false}}")
                )
                await ai.embed(long[:16] + short[:64], model=model)  # load (and on first use export), warm up
            except PulseAIError as error:  # a missing package, an export that fails its self-test
                report[name] = {"error": str(error)}
                continue
            clients[name] = ai
        rates: dict[str, dict[str, list[float]]] = {name: {"long": [], "short": []} for name in clients}
        for _ in range(rounds):
            for name, ai in clients.items():
                for kind, texts in (("long", long), ("short", short)):
                    started = time.perf_counter()
                    await ai.embed(texts, model=model)
                    rates[name][kind].append(len(texts) / (time.perf_counter() - started))
    for name in names:
        if name not in clients:
            continue
        entry: dict[str, object] = {
            "long_per_s": round(statistics.median(rates[name]["long"]), 2),
            "short_per_s": round(statistics.median(rates[name]["short"]), 2),
            "ndcg_at_10": None,
        }
        reference = report.get("torch_fp32")
        if name != "torch_fp32" and reference is not None and "long_per_s" in reference:
            entry["long_vs_torch_fp32"] = round(entry["long_per_s"] / reference["long_per_s"], 2)  # type: ignore[operator]
            entry["short_vs_torch_fp32"] = round(entry["short_per_s"] / reference["short_per_s"], 2)  # type: ignore[operator]
        slower = reference is not None and entry["long_per_s"] < reference.get("long_per_s", 0)  # type: ignore[operator]
        if ndcg_docs != 0 and not slower:
            with tempfile.TemporaryDirectory() as directory:
                quality = await run_retrieval(
                    DATA, ndcg_docs, Path(directory) / "store", local_provider(*BACKENDS[name], cache_dir)
                )
            entry["ndcg_at_10"] = quality["ndcg_at_10"]
        report[name] = entry
    return report


def run_remote(count: int, naive_count: int, latency_ms: int) -> dict[str, float | int]:
    """The fake server runs in its own process, so its work does not share this one's GIL."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--latency", str(latency_ms / 1000)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        return asyncio.run(bench_remote(base_url, count, naive_count, latency_ms))
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--local-texts", type=int, default=2000)
    parser.add_argument("--local-naive-texts", type=int, default=2000)
    parser.add_argument("--local-mix", choices=["mixed", "titles"], default="mixed")
    parser.add_argument("--concurrent-callers", type=int, default=200)
    parser.add_argument("--concurrent-mix", choices=["mixed", "titles"], default="titles")
    parser.add_argument("--concurrent-rounds", type=int, default=5)
    parser.add_argument("--remote-texts", type=int, default=10_000)
    parser.add_argument("--remote-naive-texts", type=int, default=200)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated names (torch_fp32 first)")
    parser.add_argument("--backend-long-texts", type=int, default=500, help="SciFact documents (title + abstract)")
    parser.add_argument("--backend-short-texts", type=int, default=2000, help="SciFact titles")
    parser.add_argument(
        "--backend-ndcg-docs", type=int, default=None, help="SciFact corpus size for nDCG@10 (default all; 0: skip)"
    )
    parser.add_argument("--backend-rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where exports are kept (default: a temp dir)")
    args = parser.parse_args()
    os.environ.setdefault("PULSE_AI_CACHE", "off")  # the model is measured, not the embedding cache
    names = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends: {', '.join(unknown)} (known: {', '.join(BACKENDS)})")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as directory:
        backends = asyncio.run(
            bench_backends(
                names,
                args.backend_long_texts,
                args.backend_short_texts,
                args.backend_ndcg_docs,
                args.cache_dir or Path(directory),
                args.backend_rounds,
            )
        )
    default = next(name for name, pair in BACKENDS.items() if pair == DEFAULT_LOCAL_BACKEND)
    report = {
        "backends": backends,
        "default_backend": default,
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        "local": asyncio.run(
            bench_local(args.local_texts, min(args.local_naive_texts, args.local_texts), args.local_mix)
        ),
        "remote": run_remote(args.remote_texts, min(args.remote_naive_texts, args.remote_texts), args.latency_ms),
        "concurrent": asyncio.run(
            bench_concurrent(args.concurrent_callers, args.concurrent_rounds, args.concurrent_mix)
        ),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
