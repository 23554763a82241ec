"""`ownwords export`: the selected traces as a conversational prompt/completion dataset for TRL.

Each row: ``prompt`` = [system, user] messages exactly as at generation time, ``completion`` = one
assistant message whose content is the generation prefix followed by the decoded trace -- so
SFTTrainer puts the loss on the assistant turn only, whatever the chat template. Metadata columns
(question id, sample index, token and fallback counts) ride along; the Trainer drops them.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .select import chosen_samples
from .store import TraceStore

logger = logging.getLogger(__name__)

FILE_FORMATS = (".jsonl", ".parquet")


@dataclass
class ExportConfig:
    store: str | None = field(default=None, metadata={"help": "Trace store with a selection (required)."})
    out: str | None = field(
        default=None, metadata={"help": "Output: .jsonl, .parquet, or a directory (save_to_disk) (required)."}
    )
    run: str = field(default="default", metadata={"help": "Run inside the store."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Also push the dataset to this Hugging Face repo."}
    )
    private: bool = field(default=True, metadata={"help": "With --push-to-hub: create the repo private."})

    def __post_init__(self) -> None:
        for name in ("store", "out"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        if not Path(self.store).is_file():
            raise FileNotFoundError(f"store {self.store!r} does not exist")
        if Path(self.out).exists() and not self.overwrite:
            raise FileExistsError(f"output {self.out!r} already exists; pass --overwrite to replace it")


def to_rows(samples: list[dict], run_config: dict) -> list[dict]:
    system = run_config.get("system_prompt") or None
    prefix = run_config.get("generation_prefix") or ""
    rows = []
    for s in samples:
        prompt = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": s["question"]}
        ]
        rows.append(
            dict(
                prompt=prompt,
                completion=[{"role": "assistant", "content": prefix + s["text"]}],
                question_id=s["question_id"],
                sample_index=s["sample_index"],
                n_tokens=s["n_tokens"],
                fallback_rate=s["n_fallbacks"] / max(s["n_tokens"], 1),
            )
        )
    return rows


def export(config: ExportConfig):
    """Write the chosen samples of the run; returns the `datasets.Dataset`."""
    from datasets import Dataset

    with TraceStore(config.store) as store:
        run_config = store.runs().get(config.run)
        if run_config is None:
            raise ValueError(
                f"store {config.store!r} has no run {config.run!r}; it has {sorted(store.runs())}"
            )
        rows = to_rows(chosen_samples(store, config.run), run_config)
    if not rows:
        raise ValueError(f"run {config.run!r} in {config.store!r} has no chosen sample to export")
    dataset = Dataset.from_list(rows)
    _write_atomically(dataset, Path(config.out))
    logger.info("exported %d traces to %s", len(dataset), config.out)
    if config.push_to_hub:
        dataset.push_to_hub(config.push_to_hub, private=config.private)
    return dataset


def _write_atomically(dataset, out: Path) -> None:
    """Write beside `out`, then rename: an interrupted export never leaves a half-written output."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        target = tmp / out.name
        if out.suffix == ".jsonl":
            dataset.to_json(str(target), lines=True, force_ascii=False)
        elif out.suffix == ".parquet":
            dataset.to_parquet(str(target))
        elif out.suffix:
            raise ValueError(
                f"output {str(out)!r}: expected a .jsonl or .parquet file, or a directory (no suffix)"
            )
        else:
            dataset.save_to_disk(str(target))
        if out.is_dir():
            shutil.rmtree(out)
        target.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
