"""A GGUF file as a model: loaded once through transformers' own GGUF support (dequantized to float32)
and written as a safetensors folder in a cache keyed by the file's content, so that every stage --
training, saving, Ray workers -- then uses the ordinary path on that folder.

transformers refuses to save a model loaded from GGUF ("quantized with gguf and is not
serializable"), so its weights are moved into a plain model of the same config first.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from ..errors import UserError
from ..files import cache_dir, file_sha256, hold_lock

logger = logging.getLogger(__name__)


def is_gguf(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().suffix.lower() == ".gguf"


def gguf_folder(path: str) -> str:
    """The safetensors folder of a GGUF file (made on first use, under a lock: one process converts,
    the others wait and reuse it)."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise UserError(f"model {path!r}: no such GGUF file")
    folder = cache_dir() / "gguf" / file_sha256(source)[:16]
    done = folder / "model.safetensors"
    if done.exists():
        return str(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    waiting = lambda: logger.warning("waiting for another process converting %s", source)  # noqa: E731
    with hold_lock(folder.with_suffix(".lock"), None, waiting):
        if not done.exists():
            _convert(source, folder)
    return str(folder)


def _convert(source: Path, folder: Path) -> None:
    try:
        import gguf  # noqa: F401 -- transformers reads GGUF through it
    except ImportError:
        raise UserError(
            f"model {str(source)!r} is a GGUF file; reading it needs the gguf package: pip install 'ownwords[gguf]'"
        ) from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to a safetensors folder (once): %s", source, folder)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    config = loaded.config
    for attribute in ("quantization_config",):
        if hasattr(config, attribute):
            delattr(config, attribute)
    plain = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tokenizer.save_pretrained(staging)
        plain.save_pretrained(staging)  # written last: its weights mark a complete folder
        if folder.exists():
            shutil.rmtree(folder)
        staging.replace(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
