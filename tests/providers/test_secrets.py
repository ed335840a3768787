"""Invariant 6 under faults: no rendering of an error, and no log line, holds a credential."""

from __future__ import annotations

import io
import json
import logging
import traceback

import pytest

from pulse_ai import AuthenticationError, PulseAI, PulseAIError
from pulse_ai.errors import ProviderUnavailableError
from tests.conftest import openai_yaml
from tests.fakes.openai_server import FakeOpenAIServer, Fault

KEY = "sk-live-Zq8PL2xW9vN3mR7tY5uB1cD4eF6gH0jK"
# A key that is not shaped like one (an Azure key, a gateway token): only redaction by value finds it.
PLAIN_KEY = "Zq8PL2xW9vN3mR7tY5uB1cD4eF6gH0jKplain"
HEADER_SECRET = "hdr-9f8e7d6c5b4a39281706"
EMBED = "oa/text-embedding-3-small"
CHAT = "oa/gpt-4o-mini"


def renderings(error: BaseException) -> str:
    """Every way an error reaches a human: str, repr, a traceback, logging.exception."""
    stream = io.StringIO()
    logger = logging.getLogger("pulse-ai-test-renderings")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        try:
            raise error
        except BaseException:
            logger.exception("call failed")
    finally:
        logger.removeHandler(handler)
    causes = []
    seen: BaseException | None = error
    while seen is not None:
        causes.append(f"{seen!s} {seen!r} {getattr(seen, 'args', '')}")
        seen = seen.__cause__ or seen.__context__
    return "\n".join([*causes, "".join(traceback.format_exception(error)), stream.getvalue()])


def assert_clean(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        assert secret[:12] not in text, "a prefix of a secret leaked"


FAULTS = [
    Fault.echo_key(),
    *(Fault.http(status, message=f"key {KEY} / {PLAIN_KEY} refused") for status in (400, 401, 403, 404, 422, 429, 500)),
    Fault.http(400, message="x" * 480 + PLAIN_KEY),  # a key across the 500-character cut
    Fault.malformed(),
    Fault.too_few(),
    Fault.wrong_dimension(),
    Fault.zero_vector(),
    Fault.redirect(f"http://127.0.0.1:9/steal?key={PLAIN_KEY}"),
    Fault.usage(f"{KEY}"),
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f"{f.kind}-{f.status}")
@pytest.mark.parametrize("operation", ["embed", "generate", "stream"])
async def test_no_rendering_of_any_error_holds_a_secret(fake: FakeOpenAIServer, fault: Fault, operation: str) -> None:
    fake.always(fault)
    text = "providers:\n" + openai_yaml(fake, key=PLAIN_KEY, extra="    max_retries: 0\n").replace(
        "    max_retries: 2\n", ""
    )
    async with PulseAI.from_yaml(text) as ai:
        try:
            if operation == "embed":
                await ai.embed(["hello"], model=EMBED)
            elif operation == "generate":
                await ai.generate("hello", model=CHAT)
            else:
                async with ai.stream("hello", model=CHAT) as stream:
                    async for _ in stream:
                        pass
        except PulseAIError as error:
            assert error.__cause__ is None and error.__context__ is None, "the SDK's exception is attached"
            assert_clean(renderings(error), PLAIN_KEY, KEY)
        # some faults (a usage field that is a string) are answers that are used, not errors


async def test_a_pipeline_error_group_holds_no_secret(fake: FakeOpenAIServer, fake2: FakeOpenAIServer) -> None:
    fake.always(Fault.echo_key())
    fake2.always(Fault.http(503, message=f"upstream said {PLAIN_KEY}"))
    text = (
        "providers:\n"
        + openai_yaml(fake, "a", key=PLAIN_KEY)
        + openai_yaml(fake2, "b", key=PLAIN_KEY)
        + "pipelines:\n  chat: {kind: generation, candidates: [a/gpt-4o-mini, b/gpt-4o-mini],"
        " fallback: {on_errors: [authentication, unavailable]}}\n"
    )
    async with PulseAI.from_yaml(text) as ai:
        with pytest.raises(PulseAIError) as info:
            await ai.generate("hi", pipeline="chat")
    assert isinstance(info.value, ExceptionGroup)
    assert_clean(renderings(info.value), PLAIN_KEY)


async def test_redaction_runs_before_truncation(fake: FakeOpenAIServer) -> None:
    fake.always(Fault.http(400, message="x" * 490 + PLAIN_KEY))
    async with PulseAI.from_yaml("providers:\n" + openai_yaml(fake, key=PLAIN_KEY)) as ai:
        with pytest.raises(PulseAIError) as info:
            await ai.embed(["hello"], model=EMBED)
    assert "xxxx" in str(info.value)  # the message itself is there
    assert PLAIN_KEY[:6] not in str(info.value)


def gateway_yaml(origin: FakeOpenAIServer, auth_header: str = "X-Api-Key") -> str:
    return f"""
providers:
  gw:
    type: custom_gateway
    base_url: {origin.base_url}
    api_key: {PLAIN_KEY}
    auth_header: {auth_header}
    auth_prefix: ""
    headers: {{X-Team-Secret: {HEADER_SECRET}}}
    max_retries: 0
    models: [{{name: text-embedding-3-small}}]
"""


@pytest.mark.parametrize("auth_header", ["X-Api-Key", "Authorization"])
async def test_credentials_never_follow_a_redirect_to_another_origin(
    fake: FakeOpenAIServer, fake2: FakeOpenAIServer, auth_header: str
) -> None:
    fake.always(Fault.redirect(f"{fake2.base_url}/embeddings"))
    async with PulseAI.from_yaml(gateway_yaml(fake, auth_header)) as ai:
        with pytest.raises(ProviderUnavailableError) as info:
            await ai.embed(["hello"], model="gw/text-embedding-3-small")
    assert fake2.requests == [], "the redirect was followed to another origin"
    assert "redirect" in str(info.value) and fake2.url.rsplit(":", 1)[0] in str(info.value)
    assert_clean(renderings(info.value), PLAIN_KEY, HEADER_SECRET)


async def test_debug_logs_of_the_http_stack_hold_no_secret(
    fake: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(Fault.echo_key_header(), Fault.echo_key())
    with caplog.at_level(logging.DEBUG):
        async with PulseAI.from_yaml(gateway_yaml(fake)) as ai:
            await ai.embed(["hello"], model="gw/text-embedding-3-small")  # the answer echoes the key
            with pytest.raises(AuthenticationError):
                await ai.embed(["again"], model="gw/text-embedding-3-small")
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "x-echo" in logged, "the HTTP stack did not log response headers: this test proves nothing"
    assert_clean(logged, PLAIN_KEY, HEADER_SECRET)


# Keys that repr(), JSON and bytes reprs escape: redaction must find them escaped too.
ESCAPING_KEYS = [r"Zq\Xw\Secret9876543210", "Zq'Xw\"Secret9876543211"]


def escaping_yaml(server: FakeOpenAIServer, kind: str, key: str) -> str:
    quoted = json.dumps(key)  # a JSON string is a YAML double-quoted scalar
    if kind == "openai":
        provider = f"type: openai, api_key: {quoted}"
    else:
        header = json.dumps(key.replace("Secret", "Header"))
        provider = f"type: custom_gateway, api_key: {quoted}, auth_header: X-Api-Key, headers: {{X-Team: {header}}}"
    return (
        f"providers:\n  gw: {{{provider}, base_url: '{server.base_url}', max_retries: 0,"
        " models: [{name: text-embedding-3-small}]}\n"
    )


@pytest.mark.parametrize("key", ESCAPING_KEYS, ids=["backslash", "quotes"])
@pytest.mark.parametrize("kind", ["openai", "gateway"])
async def test_keys_that_need_escaping_are_redacted_wherever_they_are_echoed(
    fake: FakeOpenAIServer, caplog: pytest.LogCaptureFixture, kind: str, key: str
) -> None:
    fake.script(Fault.echo_key_header(), Fault.echo_key_in_vector(), Fault.echo_key())
    texts = []
    with caplog.at_level(logging.DEBUG):
        async with PulseAI.from_yaml(escaping_yaml(fake, kind, key)) as ai:
            await ai.embed(["hello"], model="gw/text-embedding-3-small")  # a response header echoes it
            for _ in range(2):  # inside the embedding values, then in a 401's body
                with pytest.raises(PulseAIError) as info:
                    await ai.embed(["again"], model="gw/text-embedding-3-small")
                texts.append(renderings(info.value))
    texts.append("\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records))
    assert "x-echo" in texts[-1], "the HTTP stack did not log response headers: this test proves nothing"
    tail = key[-10:]
    for text in texts:
        assert tail not in text
        assert key.replace("Secret", "Header")[-10:] not in text
