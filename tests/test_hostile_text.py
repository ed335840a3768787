"""Lone surrogates at the library's entry points: a typed ``InputError`` (or pydantic's
``ValidationError`` for a model built directly) naming the field, never a crash deeper down (H4)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pulse_ai import InputError, PulseAI
from pulse_ai.types import GenerationParams, check_params, lone_surrogate

LONE = "\ud800"
GEN = "gpt-4o-mini"


def yaml(tmp: Path) -> str:
    return (
        "providers:\n"
        f"  a: {{type: fake, models: [{{name: {GEN}}}]}}\n"
        "pipelines:\n"
        f"  chat: {{kind: generation, candidates: [a/{GEN}]}}\n"
        f"database: {{url: 'sqlite+aiosqlite:///{tmp / 'db.sqlite'}'}}\n"
    )


def test_the_path_of_a_lone_surrogate_is_named() -> None:
    assert lone_surrogate({"a": [{"b": "ok"}, {"c": f"x{LONE}"}]}, "body") == (
        "body.a[1].c holds a lone surrogate at character 1 (U+D800): not valid Unicode text; fix how it was decoded"
    )
    found = lone_surrogate({"metadata": {LONE: 1}}, "")
    assert found is not None and found.startswith("metadata key '\\ud800'")
    assert lone_surrogate({"a": ["ü", "😀"]}, "") is None


def test_stop_sequences_are_checked() -> None:
    with pytest.raises(InputError, match=r"params\.stop.*stop\[0\] holds a lone surrogate"):
        check_params({"stop": [LONE]})
    with pytest.raises(ValidationError, match="lone surrogate"):
        GenerationParams(stop=["ok", LONE])


async def test_calls_with_lone_surrogates_are_input_errors(tmp_path: Path) -> None:
    async with PulseAI.from_yaml(yaml(tmp_path)) as ai:
        tenants = (await ai.platform()).tenants
        await tenants.create("acme")
        tenant = ai.tenant("acme")
        with pytest.raises(InputError, match="lone surrogate"):
            await tenant.generate("hi", params={"stop": [LONE]}, pipeline="chat")
        with pytest.raises(InputError):
            await tenant.generate("hi", pipeline=LONE)
        with pytest.raises(InputError):
            await tenant.generate("hi", model=f"a/{LONE}")
        with pytest.raises(InputError, match="lone surrogate"):
            await tenants.create("globex", LONE)
        keys = (await ai.platform()).api_keys
        with pytest.raises(InputError, match="lone surrogate"):
            await keys.create("acme", name=LONE)
