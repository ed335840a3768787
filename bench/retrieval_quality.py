"""Retrieval quality on BEIR SciFact through the whole pipeline: indexer -> embedded Qdrant -> search.

Indexes the corpus (title and text) with the offline default pipeline, searches the test queries,
and prints one JSON object with nDCG@10 and recall@100 (binary relevance from the test qrels).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pulse_ai import PulseAI  # noqa: E402
from pulse_ai.vectors import Record  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "scifact"


def load(data: Path, max_docs: int | None) -> tuple[list[Record], dict[str, str], dict[str, set[str]]]:
    qrels: dict[str, set[str]] = defaultdict(set)
    with (data / "qrels" / "test.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if int(row["score"]) > 0:
                qrels[row["query-id"]].add(row["corpus-id"])
    records = []
    with (data / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            records.append(Record(doc["_id"], f"{doc['title']} {doc['text']}".strip(), {"title": doc["title"]}))
    if max_docs is not None:
        relevant = {doc for docs in qrels.values() for doc in docs}
        records = [r for r in records if r.record_id in relevant] + [r for r in records if r.record_id not in relevant][
            : max(0, max_docs - len(relevant))
        ]
    queries = {}
    with (data / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            query = json.loads(line)
            if query["_id"] in qrels:
                queries[query["_id"]] = query["text"]
    return records, queries, dict(qrels)


def ndcg_at(ranked: list[str], relevant: set[str], k: int) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, doc in enumerate(ranked[:k]) if doc in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def local_provider(backend: str | None = None, precision: str | None = None, cache_dir: Path | None = None) -> str:
    """The local provider's YAML (flow style) running the bundled model on ``backend``/``precision``."""
    model = "name: all-MiniLM-L6-v2"
    model += f", backend: {backend}" if backend else ""
    model += f", precision: {precision}" if precision else ""
    cache = f", cache_dir: '{cache_dir}'" if cache_dir else ""
    return f"{{type: sentence_transformers{cache}, models: [{{{model}}}]}}"


async def run(
    data: Path,
    max_docs: int | None,
    store_path: Path,
    provider: str | None = None,
    query_provider: str | None = None,
) -> dict[str, object]:
    """``provider`` indexes the documents (default: the configured default backend);
    ``query_provider``, when given, embeds the queries (vectors of two backends mixed)."""
    records, queries, qrels = load(data, max_docs)
    config = (
        f"providers: {{local: {provider or local_provider()}}}\n"
        "pipelines: {embedding: {kind: embedding, candidates: [local/all-MiniLM-L6-v2]}}\n"
        f"vector_store: {{backend: embedded, path: '{store_path}', layout: per_tenant_table}}\n"
        f"database: {{url: 'sqlite+aiosqlite:///{store_path}.db'}}\n"
    )
    async with PulseAI.from_yaml(config) as ai:
        await (await ai.platform()).tenants.create("bench")
        indexer = ai.indexer()
        indexer.embed_batch_size = 1024
        started = time.perf_counter()
        report = await indexer.index("bench", "scifact", records)
        index_seconds = time.perf_counter() - started
        started = time.perf_counter()
        await ai.vector_store().optimize()
        optimize_seconds = time.perf_counter() - started

        ids = list(queries)
        if query_provider is None:
            vectors = (await ai.embed([queries[q] for q in ids])).vectors
        else:
            async with PulseAI.from_yaml(f"providers: {{local: {query_provider}}}\ncache: {{enabled: false}}") as other:
                vectors = (await other.embed([queries[q] for q in ids], model="local/all-MiniLM-L6-v2")).vectors
        ndcg, recall = [], []
        started = time.perf_counter()
        for query_id, vector in zip(ids, vectors, strict=True):
            hits = await indexer.search("bench", "scifact", vector, limit=100)
            ranked = [hit.record_id for hit in hits]
            ndcg.append(ndcg_at(ranked, qrels[query_id], 10))
            recall.append(len(set(ranked) & qrels[query_id]) / len(qrels[query_id]))
        search_seconds = time.perf_counter() - started
    return {
        "dataset": "scifact",
        "docs": len(records),
        "queries": len(ids),
        "ndcg_at_10": round(sum(ndcg) / len(ndcg), 4),
        "recall_at_100": round(sum(recall) / len(recall), 4),
        "index_seconds": round(index_seconds, 1),
        "optimize_seconds": round(optimize_seconds, 1),
        "search_ms_per_query": round(1000 * search_seconds / len(ids), 2),
        "failed": report.failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--max-docs", type=int, default=None, help="a smaller corpus (all relevant docs kept)")
    parser.add_argument("--backend", default=None, help="torch, onnx or openvino (default: the default backend)")
    parser.add_argument("--precision", default=None, help="fp32, bf16 or int8")
    parser.add_argument("--query-backend", default=None, help="embed the queries with another backend")
    parser.add_argument("--query-precision", default=None)
    parser.add_argument("--cache-dir", type=Path, default=None, help="where exports are kept (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        cache_dir = args.cache_dir or Path(directory) / "exports"
        provider = local_provider(args.backend, args.precision, cache_dir)
        query_provider = None
        if args.query_backend or args.query_precision:
            query_provider = local_provider(args.query_backend, args.query_precision, cache_dir)
        report = asyncio.run(run(args.data, args.max_docs, Path(directory) / "store", provider, query_provider))
        report["backend"] = provider
        if query_provider:
            report["query_backend"] = query_provider
        print(json.dumps(report))


if __name__ == "__main__":
    main()
