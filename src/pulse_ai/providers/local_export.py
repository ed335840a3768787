"""Exported local models (OpenVINO, ONNX; quantized): made offline, atomically, checked before use.

An export is made from the model directory on this machine (the bundled all-MiniLM-L6-v2 or a
configured ``path:``) with sentence-transformers' own backend support, never from a hub. It is built
in a temporary directory beside its final place, self-tested, marked with a manifest of its files'
digests and only then renamed into place, under a file lock: two processes preparing at once end with
one good export, and a kill mid-export leaves only a temporary directory that is never read. An
export whose files no longer match its manifest (half-written by hand, corrupted on disk) is moved
aside and made again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pulse_ai.errors import BackendUnavailableError, ModelExportError
from pulse_ai.providers.local_lanes import install_lanes, lanes_of, remove_lanes

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "CACHE_DIR_ENV",
    "MANIFEST",
    "MIN_SELF_TEST_COSINE",
    "REFERENCE_TEXTS",
    "Export",
    "default_cache_dir",
    "discard_export",
    "export_dir_for",
    "prepare_export",
    "require_packages",
    "self_test",
    "unit_rows",
]

CACHE_DIR_ENV = "PULSE_AI_MODEL_CACHE"
MANIFEST = "pulse-ai-export.json"
MIN_SELF_TEST_COSINE = 0.99
# Which import each backend needs, and the extra that installs it
_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "onnx": (("onnxruntime", "optimum.onnxruntime"), "onnx"),
    "openvino": (("openvino", "optimum.intel"), "openvino"),
}
# Static int8 quantization calibrates with nncf on a dataset read by `datasets` (the openvino extra)
_INT8_PACKAGES = ("nncf", "datasets")
# Short, long, unicode and code: the self-test an export passes before it is used
REFERENCE_TEXTS = [
    "Checkout page times out when the cart holds more than 50 items.",
    "login",
    ".",  # nearly empty: int8 models drift most on these
    "Ünïcödé passwords — 密码 — break the sign-in form 🙂",
    "def handler(event): return {'status': 200, 'body': json.dumps(event)}",
    "Quarterly revenue grew by twelve percent while churn fell. " * 40,
    "Bananas are rich in potassium.",
    # a long, varied text: quantization errors add up over 256 tokens, and a repeated sentence hides them
    (
        "Background: Chronic kidney disease affects one adult in ten and raises the risk of heart failure. "
        "Methods: we followed 4,512 patients (aged 40-85) for 6.5 years, measured eGFR, albuminuria and "
        "NT-proBNP every six months, and fitted Cox models adjusted for diabetes, smoking and blood pressure. "
        "Results: each 10 ml/min fall in eGFR was associated with a hazard ratio of 1.31 (95% CI 1.18-1.45) "
        "for hospitalisation; SGLT2 inhibitors halved the decline. Conclusions: early screening matters. "
        "Le rein, die Niere, el riñón: the search index must serve Ünïcödé queries, code such as "
        "`SELECT count(*) FROM events WHERE tenant_id = $1`, and numbers like 3.14159 or 1e-9 alike."
    ),
]
_STATIC_INT8_FILE = "openvino/openvino_model_qint8_quantized.xml"
_DYNAMIC_INT8_FILE = "onnx/model_qint8_avx2.onnx"


def default_cache_dir() -> Path:
    """``$PULSE_AI_MODEL_CACHE``, else ``$XDG_CACHE_HOME/pulse-ai/models`` (``~/.cache/pulse-ai/models``)."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pulse-ai" / "models"


# What is known not to install today, said where the extra is named
_CAVEATS = {
    "onnx": (
        ". Note: optimum-onnx 0.1 requires transformers<4.58, which sentence-transformers 6 does not accept, so "
        "that extra does not install beside pulse-ai's own dependencies today"
    ),
}


def require_packages(backend: str, precision: str = "fp32") -> None:
    """Raise :class:`BackendUnavailableError` naming the extra when ``backend``'s packages are missing."""
    if backend not in _PACKAGES:
        return
    modules, extra = _PACKAGES[backend]
    if backend == "openvino" and precision == "int8":
        modules += _INT8_PACKAGES
    missing = [name for name in modules if not _importable(name)]
    if missing:
        raise BackendUnavailableError(
            f"the {backend} backend needs {', '.join(missing)}, which is not installed; install it with "
            f"`pip install 'pulse-ai[{extra}]'` (or choose `backend: torch`){_CAVEATS.get(backend, '')}"
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


@dataclass(frozen=True)
class Export:
    """A ready export: the directory to load with ``backend=`` and the model file inside it."""

    path: Path
    backend: str
    precision: str
    file_name: str
    made: bool  # made by this call (False: an earlier export was reused)


def _source_digest(source: Path) -> str:
    """Changes when the source model does: its resolved path and its files' names, sizes and times."""
    digest = hashlib.sha256(str(source.resolve()).encode("utf-8"))
    for file in sorted(source.rglob("*")):
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.relative_to(source)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def export_dir_for(source: str, backend: str, precision: str, cache_dir: Path) -> Path:
    source_path = Path(source)
    return cache_dir / f"{source_path.name}-{_source_digest(source_path)}" / f"{backend}-{precision}"


def prepare_export(
    source: str, backend: str, precision: str, cache_dir: Path, reference: SentenceTransformer
) -> Export:
    """The export of ``source`` for (backend, precision): reused when a valid one exists, else made.

    ``reference`` is the torch fp32 model the export's self-test compares with."""
    require_packages(backend, precision)
    if not Path(source).is_dir():
        raise ModelExportError(
            f"cannot export {source!r}: exports are made from a model directory on this machine (give `path:`)"
        )
    final = export_dir_for(source, backend, precision, cache_dir)
    try:
        return _prepare_in(final, source, backend, precision, reference)
    except OSError as exc:  # a read-only or full cache directory, a lock that cannot be taken
        raise ModelExportError(
            f"cannot keep the {backend} {precision} export of {source!r} in {final.parent}: {exc} "
            f"(set `cache_dir:` or ${CACHE_DIR_ENV} to a writable directory)"
        ) from exc


def _prepare_in(final: Path, source: str, backend: str, precision: str, reference: SentenceTransformer) -> Export:
    # a valid export is read without the lock, so that a read-only cache (an image made with
    # `pulse-ai models prepare`) serves; only a missing or damaged one is (re)made under it
    file_name = _valid_manifest(final) if final.exists() else None
    if file_name is not None:
        return Export(final, backend, precision, file_name, made=False)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _locked(final.parent / f".{final.name}.lock"):
        if final.exists():
            file_name = _valid_manifest(final)
            if file_name is not None:
                return Export(final, backend, precision, file_name, made=False)
            _remove(final)  # half-written or corrupted: made again
        for stale in final.parent.glob(f".{final.name}.building-*"):
            _remove(stale)  # left by a process killed mid-export (whoever builds holds this lock)
        # a plain mkdir (not mkdtemp's 0700): the export gets the umask's modes, so that a cache prepared
        # by one user serves another; the name is unique enough, as whoever builds holds the lock
        building = final.parent / f".{final.name}.building-{uuid.uuid4().hex}"
        building.mkdir()
        try:
            file_name = _export(source, backend, precision, building)
            model = load_export(building, backend, precision, file_name)
            self_test(model, reference, f"{backend} {precision}")
            _write_manifest(building, backend, precision, file_name)
            os.replace(building, final)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    return Export(final, backend, precision, file_name, made=True)


def discard_export(export: Export) -> None:
    """Remove a reused export that would not load or failed its self-test (its files matched their
    manifest: made by another version of a backend, say), so that the next prepare makes it again."""
    try:
        with _locked(export.path.parent / f".{export.path.name}.lock"):
            if _valid_manifest(export.path) == export.file_name:  # still the one that failed, not a new one
                _remove(export.path)
    except OSError as exc:
        raise ModelExportError(f"cannot remove the failed export in {export.path}: {exc}") from exc


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)  # a link is removed, never followed
    else:
        shutil.rmtree(path, ignore_errors=True)


# How long a process waits for another one's export before it gives up (an export takes ~10-60 s)
LOCK_TIMEOUT = 600.0


@contextlib.contextmanager
def _locked(path: Path, timeout: float | None = None) -> Iterator[None]:
    """An exclusive lock on ``path`` (never through a symlink), given up after ``timeout`` seconds."""
    deadline = time.monotonic() + (LOCK_TIMEOUT if timeout is None else timeout)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    try:
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel if we die
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"another process has held {path} for too long") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _export(source: str, backend: str, precision: str, target: Path) -> str:
    """Write the export into ``target`` and return its model file (relative to ``target``)."""
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(source, device="cpu", backend=backend, local_files_only=True)  # type: ignore[arg-type]
        model.save_pretrained(str(target))
        if backend == "openvino":
            if precision == "int8":
                _quantize_openvino(model, target)
                return _STATIC_INT8_FILE
            return "openvino/openvino_model.xml"
        if precision == "int8":
            from sentence_transformers import export_dynamic_quantized_onnx_model

            export_dynamic_quantized_onnx_model(model, "avx2", str(target))
            return _DYNAMIC_INT8_FILE
        return "onnx/model.onnx"
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        raise ModelExportError(f"cannot export {source!r} to {backend} {precision}: {exc}") from exc


def _quantize_openvino(model: SentenceTransformer, target: Path) -> None:
    """Post-training static int8 quantization, calibrated offline on the bundled demo records."""
    from importlib import resources

    from optimum.intel import OVQuantizationConfig
    from sentence_transformers import export_static_quantized_openvino_model

    calibration = target / ".calibration"
    calibration.mkdir()
    lines = resources.files("pulse_ai").joinpath("demo/records.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines if line.strip()] + REFERENCE_TEXTS
    with (calibration / "train.jsonl").open("w", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({"text": text}) + "\n")
    try:
        # nncf draws its progress on stdout, which belongs to the caller (a CLI's output, a bench's JSON)
        with contextlib.redirect_stdout(sys.stderr):
            export_static_quantized_openvino_model(
                model,
                OVQuantizationConfig(num_samples=len(texts)),
                str(target),
                dataset_name=str(calibration),
                dataset_config_name="default",
                dataset_split="train",
                column_name="text",
            )
    finally:
        shutil.rmtree(calibration, ignore_errors=True)


def load_export(path: Path, backend: str, precision: str, file_name: str) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    model_kwargs: dict[str, Any] = {"file_name": file_name}
    if backend == "openvino" and precision in ("bf16", "fp32"):
        # explicit both ways: on a CPU with AMX, OpenVINO runs an fp32 model in bf16 unless told not to
        hint = "bf16" if precision == "bf16" else "f32"
        model_kwargs["ov_config"] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
    if backend == "onnx":
        model_kwargs["provider"] = "CPUExecutionProvider"
    try:
        model = SentenceTransformer(
            str(path),
            device="cpu",
            backend=backend,  # type: ignore[arg-type]
            local_files_only=True,
            model_kwargs=model_kwargs,
        )
        if backend == "openvino":
            install_lanes(model)  # batches run side by side on the CPU's streams
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelExportError(f"cannot load the {backend} {precision} export in {path}: {exc}") from exc
    return model


def self_test(model: SentenceTransformer, reference: SentenceTransformer, what: str) -> float:
    """The lowest cosine between ``model``'s and ``reference``'s unit vectors on the reference texts;
    below ``MIN_SELF_TEST_COSINE`` the model is refused."""
    theirs = unit_rows(reference.encode(REFERENCE_TEXTS, convert_to_numpy=True, show_progress_bar=False))
    runs = [model.encode(REFERENCE_TEXTS, convert_to_numpy=True, show_progress_bar=False)]
    lanes = lanes_of(model)
    if lanes is not None:  # the parallel path too (its own compile of the network), two batches at once
        half = len(REFERENCE_TEXTS) // 2
        runs.append(np.concatenate(lanes.encode(model, [REFERENCE_TEXTS[:half], REFERENCE_TEXTS[half:]])))
    lowest = float(np.min([np.sum(unit_rows(ours) * theirs, axis=1) for ours in runs]))  # NaN stays NaN
    if not np.isfinite(lowest) or lowest < MIN_SELF_TEST_COSINE:
        remove_lanes(model)  # refused: its threads end now
        raise ModelExportError(
            f"the {what} model fails its self-test: cosine {lowest:.4f} to torch fp32 on the reference texts "
            f"(at least {MIN_SELF_TEST_COSINE} is needed); it is not used"
        )
    return lowest


def unit_rows(vectors: Any) -> npt.NDArray[np.float32]:
    """Each row scaled to length 1, in float32 (a zero row stays zero)."""
    array = np.asarray(vectors, dtype=np.float32)
    unit: npt.NDArray[np.float32] = array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)
    return unit


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path) -> dict[str, str]:
    return {
        str(file.relative_to(directory)): _file_digest(file)
        for file in sorted(directory.rglob("*"))
        if file.is_file() and file.name != MANIFEST
    }


def _write_manifest(directory: Path, backend: str, precision: str, file_name: str) -> None:
    manifest = {"backend": backend, "precision": precision, "file_name": file_name, "files": _files(directory)}
    temporary = directory / f"{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(temporary, directory / MANIFEST)


def _valid_manifest(directory: Path) -> str | None:
    """The export's model file when every file matches the manifest; None otherwise."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        file_name = manifest["file_name"]
        recorded = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(file_name, str) or file_name not in recorded or _files(directory) != recorded:
        return None
    return file_name
