"""`ownwords export`: the selected traces as a conversational prompt/completion dataset for TRL.

Each row: ``prompt`` = [system, user] messages exactly as at generation time, ``completion`` = one
assistant message whose content is the generation prefix followed by the decoded trace -- so
SFTTrainer puts the loss on the assistant turn only, whatever the chat template. Metadata columns
(question id, sample index, token and fallback counts, how the trace ended) ride along; the Trainer drops them.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from ..data.questions import chat_messages
from ..data.store import TraceStore
from ..errors import UserError
from .export_config import ExportConfig, ExportResult  # noqa: F401 (part of this module's API)

logger = logging.getLogger(__name__)

def to_rows(samples: list[dict], run_config: dict) -> list[dict]:
    system = run_config.get("system_prompt") or None
    prefix = run_config.get("generation_prefix") or ""
    rows = []
    for s in samples:
        rows.append(
            dict(
                prompt=chat_messages(s["question"], system),
                completion=[{"role": "assistant", "content": prefix + s["text"]}],
                question_id=s["question_id"],
                sample_index=s["sample_index"],
                n_tokens=s["n_tokens"],
                fallback_rate=s["n_fallbacks"] / max(s["n_tokens"], 1),
                finish_reason=s.get("finish_reason"),
            )
        )
    return rows


def export(config: ExportConfig):
    """Write the chosen samples of the run; returns the `datasets.Dataset`."""
    from datasets import Dataset

    with TraceStore(config.store, create=False, write=False) as store:
        rows = to_rows(store.chosen(config.run), store.require_run(config.run))
        judged = (store.selection_report(config.run) or {}).get("samples")
        now = store.summary(config.run)["samples"]
    if judged is not None and now > judged:
        logger.warning(
            "export %s: run %r has %d samples, but `ownwords select` judged only the %d there were when it ran; "
            "the other %d were never judged and none of them is exported: run select again",
            config.out, config.run, now, judged, now - judged,
        )  # fmt: skip
    if not rows:
        raise UserError(f"run {config.run!r} in {config.store!r} has no chosen sample to export")
    dataset = Dataset.from_list(rows)
    try:
        _write_atomically(dataset, Path(config.out))
    except OSError as err:
        raise UserError(f"output {config.out!r}: cannot write it ({err})") from err
    if config.push_to_hub:
        try:
            dataset.push_to_hub(config.push_to_hub, private=config.private)
        except OSError as err:  # unreachable hub, no token, no rights: the local export stands
            raise UserError(
                f"push to hub repo {config.push_to_hub!r} failed ({err}); {config.out!r} was written"
            ) from err
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
        else:
            dataset.save_to_disk(str(target))
        if out.is_dir():  # only ever a dataset folder an earlier export wrote (checked by ExportConfig)
            shutil.rmtree(out)
        target.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
