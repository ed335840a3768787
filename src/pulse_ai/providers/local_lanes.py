"""Parallel inference for an OpenVINO model: the CPU's cores split into streams, each running its own
batch (OpenVINO's THROUGHPUT mode), instead of all of them working on one small batch at a time.

all-MiniLM-L6-v2's batches (about 1,024 tokens) are too small to keep two cores busy together: on
this project's 2-core host, two streams of one core each encoded ~25% more long documents and titles
a second than one two-core stream (measured side by side; see the README). A lone batch, the common
case for one short call, still runs on the latency-compiled model across every core: one stream of
a throughput compile would run it on one core, at ~1.6x its time. (Measured on 2 cores only: on a
host with many streams, a run of fewer batches than streams leaves some cores idle.)

How it sits in sentence-transformers: optimum-intel's ``OVModel`` runs its compiled model through
its ``request`` attribute, one call at a time. :class:`Lanes` takes that place: called from one of
its own worker threads it runs the batch on that thread's request of the throughput compile, called
from any other thread on that thread's request of the latency compile, so no request is ever shared
between threads. A tokenizer is not safe to share between threads either, so batches are tokenized
by the caller, one after another, and only the model runs on the lanes."""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["Lanes", "install_lanes", "lanes_of", "remove_lanes"]

logger = logging.getLogger(__name__)

# batches tokenized ahead of the lanes: enough to keep every lane busy, few enough to bound memory
_AHEAD_PER_LANE = 2
_numbers = itertools.count(1)


class Lanes:
    """Stands in for an optimum ``OVModel``'s compiled model (its ``request``)."""

    def __init__(self, latency: Any, throughput: Any, count: int) -> None:
        self._latency = latency
        self._throughput = throughput
        self.count = count
        self.name = f"pulse-ai-openvino-{next(_numbers)}"  # its threads' names begin with this
        self._pid = os.getpid()  # a forked child inherits the pool but none of its threads
        self._local = threading.local()
        # the initializer holds nothing of this object: lanes dropped by optimum are collected and
        # their threads end (a bound method would keep both alive as long as the threads)
        self._pool = ThreadPoolExecutor(
            count, thread_name_prefix=self.name, initializer=_mark_lane, initargs=(self._local,)
        )

    def __call__(self, inputs: dict[str, Any]) -> Any:
        """What ``OVModel`` calls for each batch: this thread's own infer request runs it."""
        held: tuple[int | None, Any] = getattr(self._local, "request", (None, None))
        pid, request = held
        if pid != os.getpid():  # none yet, or one a forked child inherited (it would wait forever)
            compiled = self._throughput if getattr(self._local, "lane", False) else self._latency
            request = compiled.create_infer_request()
            self._local.request = (os.getpid(), request)
        return request.infer(inputs, share_inputs=True)  # outputs are copied: the request is used again

    def __getattr__(self, name: str) -> Any:  # anything else optimum asks of its compiled model
        if name.startswith("_"):  # never recurse while half-made
            raise AttributeError(name)
        return getattr(self._latency, name)

    @property
    def compiled_models(self) -> tuple[Any, Any]:
        """The latency compile (lone batches) and the throughput compile (the lanes)."""
        return self._latency, self._throughput

    def encode(self, model: SentenceTransformer, batches: Sequence[list[str]]) -> list[npt.NDArray[np.float32]]:
        """Each batch's sentence embeddings (float32), in order. Batches are tokenized here, one after
        another, and run on the lanes; when one fails, no lane is still running when this raises."""
        prompt = model.prompts.get(model.default_prompt_name) if model.default_prompt_name else None
        results: list[npt.NDArray[np.float32]] = []
        pending: deque[Future[npt.NDArray[np.float32]]] = deque()
        try:
            for batch in batches:
                features = model.preprocess(batch, prompt=prompt)
                pending.append(self._pool.submit(_forward, model, features))
                while len(pending) >= self.count * _AHEAD_PER_LANE:
                    results.append(pending.popleft().result())
            while pending:
                results.append(pending.popleft().result())
        finally:
            for future in pending:
                future.cancel()
            wait(pending)
        return results


def _mark_lane(local: threading.local) -> None:
    local.lane = True


def _forward(model: SentenceTransformer, features: dict[str, Any]) -> npt.NDArray[np.float32]:
    import torch

    with torch.inference_mode():
        embeddings = model(features)["sentence_embedding"]
    vectors: npt.NDArray[np.float32] = embeddings.float().numpy()
    return vectors


def install_lanes(model: SentenceTransformer) -> Lanes | None:
    """Compile ``model``'s OpenVINO network a second time for throughput and put :class:`Lanes` in
    place of its compiled model; None (and the model as it was, one batch at a time) where the CPU
    gives one stream or the second compile fails (logged: the model itself is not at fault)."""
    from optimum.intel.openvino.modeling_base import core  # optimum's own OpenVINO runtime

    auto_model: Any = model[0].auto_model
    auto_model.compile()
    latency = auto_model.request
    try:
        config = {**auto_model.ov_config, "PERFORMANCE_HINT": "THROUGHPUT"}
        throughput = core.compile_model(auto_model.model, "CPU", config)
        count = int(throughput.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    except RuntimeError as exc:
        logger.warning("OpenVINO's throughput compile failed, so batches run one at a time: %s", exc)
        return None
    if count < 2:
        return None
    lanes = Lanes(latency, throughput, count)
    auto_model.request = lanes
    logger.debug("%s runs batches on %d OpenVINO streams", auto_model.model.friendly_name, count)
    return lanes


def remove_lanes(model: SentenceTransformer) -> None:
    """Put the latency compile back in ``model`` and end the lanes' threads (a model refused by its
    self-test, say); a call running on them is let finish."""
    lanes = lanes_of(model)
    if lanes is None:
        return
    auto_model: Any = model[0].auto_model
    auto_model.request = lanes.compiled_models[0]
    lanes._pool.shutdown(wait=True, cancel_futures=True)


def lanes_of(model: SentenceTransformer) -> Lanes | None:
    """The lanes installed in ``model``, if they are still in place (optimum recompiles, and drops
    them, when the model is moved or reshaped: it then runs one batch at a time, as before) and this
    is the process that made them (in a forked child their threads do not exist)."""
    try:
        request: Any = getattr(model[0].auto_model, "request", None)
    except (AttributeError, IndexError, TypeError):
        return None
    if not isinstance(request, Lanes) or request._pid != os.getpid():
        return None
    return request
