"""Loading models: one `load_model` for every stage (training included), the teacher/student pair with
its vocabulary alignment, device checks, and the fingerprint that keys evaluation records."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import urllib.request
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..errors import MissingInput, UserError
from ..files import display_name, file_sha256  # noqa: F401 (display_name: part of this module's API)
from ..rsd.vocab import VocabAlignment, align_vocabularies
from .facts import logits_width
from .gguf import gguf_folder, is_gguf

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before anything is loaded."""
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise UserError(
            f"device {device!r} is not a torch device ({err}); expected cpu, cuda, cuda:1, mps..."
        ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(
                f"device {device!r}: no CUDA device is available (torch {torch.__version__}"
                f"{', a CPU-only build' if torch.version.cuda is None else ''}); use device cpu"
            )
        if dev.index is not None and dev.index >= count:
            raise UserError(f"device {device!r}: this machine has {count} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {device!r}: MPS is not available on this machine")


def _resolve(name_or_path: str) -> tuple[str, bool]:
    """(what from_pretrained should get, whether to use the local cache only). A local folder must
    hold a model; a name that can only be a path (``./x``, ``~/x``, ``a/b/c``) and is not there is
    said to be missing at once, never looked up on the hub. A hub id is taken from the cache when
    the hub cannot be reached (or HF_HUB_OFFLINE is set), instead of retrying for minutes."""
    if is_gguf(name_or_path):
        return gguf_folder(name_or_path), False
    local = Path(name_or_path).expanduser()
    if local.exists():
        if not (local / "config.json").exists():
            raise MissingInput(f"model {name_or_path!r}: no model in that folder (expected a config.json in it)")
        return str(local), False
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path:
        raise MissingInput(f"model {name_or_path!r}: no such folder ({local.resolve()} does not exist)")
    cached = _cached(name_or_path)
    if _offline() or not hub_reachable():
        if cached:
            return name_or_path, True
        why = (
            "HF_HUB_OFFLINE is set; download it into the cache first, or give a local model folder"
            if _offline()
            else "the Hugging Face Hub cannot be reached; give a local model folder (HF_HUB_OFFLINE=1: hub ids are "
            "read from the cache, without trying the network)"
        )
        raise MissingInput(f"model {name_or_path!r}: no such folder here, and not a cached hub model ({why})")
    return name_or_path, False


def model_source(name_or_path: str) -> str:
    """What another library (vLLM) should load for this model: the local folder (a GGUF file's
    converted one) or the hub id, checked as `load_model` checks it."""
    return _resolve(name_or_path)[0]


def _cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 -- not a valid repo id for the cache: not cached
        return False


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


@functools.cache
def hub_reachable(timeout: float = 5.0) -> bool:
    """Does the Hugging Face Hub answer within `timeout` seconds? (Asked once per process.)"""
    from huggingface_hub import constants

    try:
        urllib.request.urlopen(constants.ENDPOINT, timeout=timeout).close()  # noqa: S310 (the hub's https URL)
    except (OSError, ValueError):
        return False
    return True


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """The tokenizer alone (a driver whose workers hold the models needs no more)."""
    source, cache_only = _resolve(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, local_files_only=cache_only)
    except OSError as err:  # transformers reports a missing/unreachable model as OSError
        raise MissingInput(f"could not load the tokenizer of model {name_or_path!r}: {err}") from err


def load_model(name_or_path: str, device: str, dtype: str, trust_remote_code: bool = False):
    """(model, tokenizer) from a hub id or a local directory; safetensors weights only."""
    source, cache_only = _resolve(name_or_path)
    check_device(device)
    tokenizer = load_tokenizer(name_or_path, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, use_safetensors=True,
            local_files_only=cache_only,
        )  # fmt: skip
    except OSError as err:  # transformers reports a missing/unreachable model as OSError
        raise MissingInput(f"could not load model {name_or_path!r}: {err}") from err
    return model.to(device).eval(), tokenizer


def set_cpu_threads(threads: int = 0) -> int:
    """torch's CPU threads: `threads` if given; else torch's default (the physical cores), fewer when
    other work already keeps cores busy (1-minute load average): oversubscribing a loaded 2-core
    machine made a training step 6x slower. Returns the number set."""
    if not threads:
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        free = int((os.cpu_count() or 1) - busy)
        threads = max(1, min(torch.get_num_threads(), free))
        logger.info(
            "using %d torch threads (load average %.1f on %d cores; --threads overrides)",
            threads,
            busy,
            os.cpu_count() or 1,
        )
    torch.set_num_threads(threads)
    return threads


# Files a training run leaves beside a model that are not the model (their bytes change every run).
NOT_THE_MODEL = {"train_summary.json", "loss.png", "training_args.bin", "README.md", "trainer_state.json"}


def model_fingerprint(name_or_path: str) -> str:
    """What a model is: for a local folder, a hash of the content of its files (weights, config,
    tokenizer; not a training's summary or plot), so new weights at the same path are a new model and
    a moved or copied folder is the same one (hashes are memoised per file version); for a hub id,
    the id itself (pin a revision by downloading it to a folder); for a GGUF file, its bytes."""
    local = Path(name_or_path).expanduser()
    if is_gguf(name_or_path) and local.is_file():
        return file_sha256(local)[:16]
    if not local.is_dir():
        return name_or_path
    digest = hashlib.sha256()
    for path in sorted(p for p in local.iterdir() if p.is_file() and p.name not in NOT_THE_MODEL):
        digest.update(json.dumps([path.name, file_sha256(path)]).encode())
    return digest.hexdigest()[:16]


def load_pair(
    teacher: str,
    student: str,
    device: str,
    dtype: str,
    trust_remote_code: bool = False,
    min_vocab_overlap: float = 0.5,
) -> tuple[object, object, object, VocabAlignment]:
    """(student, student tokenizer, teacher, alignment) of an RSD pair, each model by hub id or path."""
    student_model, s_tok = load_model(student, device, dtype, trust_remote_code)
    teacher_model, t_tok = load_model(teacher, device, dtype, trust_remote_code)
    widths = logits_width(student_model), logits_width(teacher_model)
    return student_model, s_tok, teacher_model, align_vocabularies(s_tok, t_tok, *widths, min_vocab_overlap)
