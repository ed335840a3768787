"""A child process for the kill -9 test: many concurrent calls through the facade; prints the
request id of every call that returned (so its rows were committed), one per line."""

from __future__ import annotations

import asyncio
import sys

from pulse_ai import PulseAI


async def main(db_url: str, tenant: str) -> None:
    config = (
        "providers:\n  f: {type: fake, models: [{name: text-embedding-3-small}]}\n"
        "pipelines:\n  embedding: {kind: embedding, candidates: [f/text-embedding-3-small]}\n"
        f"database: {{url: '{db_url}'}}\n"
    )
    ai = PulseAI.from_yaml(config)
    acme = ai.tenant(tenant)
    counter = 0

    async def worker() -> None:
        nonlocal counter
        while True:
            counter += 1
            result = await acme.embed([f"burst text {counter}"])
            print(result.request_id, flush=True)

    await asyncio.gather(*(worker() for _ in range(16)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
