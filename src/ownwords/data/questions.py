"""Questions in, prompts out: loading question sets (hub id or local file) and chat-formatting them."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingInput, UserError
from ..options import unescape  # noqa: F401 (part of this module's API)

logger = logging.getLogger(__name__)

LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
# Column names tried in order when no field is given: s1K, LIMO, MATH500, GSM8K, AIME and GPQA shapes.
QUESTION_FIELDS = ("question", "problem", "Question", "prompt")
ANSWER_FIELDS = ("answer", "solution", "Correct Answer")
ID_FIELDS = ("id", "unique_id", "Record ID")


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answer: str | None


def load_rows(source: str, split: str = "train", what: str = "questions file"):
    """A `datasets.Dataset` from a local jsonl/json/parquet/csv file or a Hugging Face dataset id.
    Every failure is a UserError naming `source`: a missing, empty or malformed file, an unreachable hub."""
    path = Path(source).expanduser()
    if path.suffix in LOCAL_BUILDERS or path.exists() or source.startswith((".", "/", "~")):
        return _load_local(path, source, what)
    return load_hub(what, source, None, split)


def _load_local(path: Path, source: str, what: str):
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError

    if not path.is_file():
        raise MissingInput(f"{what} {source!r} does not exist")
    if path.suffix not in LOCAL_BUILDERS:
        raise UserError(f"{what} {source!r}: expected one of {', '.join(LOCAL_BUILDERS)}")
    if path.suffix == ".jsonl":
        _check_jsonl(path, source, what)
    elif path.stat().st_size == 0:
        raise UserError(f"{what} {source!r} is empty")
    try:
        rows = load_dataset(LOCAL_BUILDERS[path.suffix], data_files=str(path), split="train")
    except (DatasetGenerationError, ValueError) as err:
        cause = err.__cause__ or err
        raise UserError(f"{what} {source!r} cannot be read as {path.suffix} ({cause})") from err
    if len(rows) == 0:
        raise UserError(f"{what} {source!r} has no rows")
    return rows


def _check_jsonl(path: Path, source: str, what: str) -> None:
    """Every non-blank line must be a JSON object; at least one line."""
    count = 0
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{what} {source!r}, line {n}: not valid JSON ({err})") from None
            if not isinstance(row, dict):
                raise UserError(
                    f"{what} {source!r}, line {n}: expected a JSON object, got {type(row).__name__}"
                )
            count += 1
    if count == 0:
        raise UserError(f"{what} {source!r} is empty (no JSON lines)")


def load_hub(
    what: str, dataset_id: str, config: str | None, split: str, hint: str = "give a local file instead"
):
    """A split of a hub dataset; an unreachable hub or an unknown id is a one-line UserError."""
    import os

    from datasets import load_dataset
    from datasets.exceptions import DatasetNotFoundError

    try:
        return load_dataset(dataset_id, config, split=split)
    except (ConnectionError, DatasetNotFoundError, FileNotFoundError) as err:
        offline = (
            " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") else ""
        )
        raise UserError(
            f"{what} {dataset_id!r}: cannot load it from the Hugging Face Hub{offline} ({err}); {hint}"
        ) from err


def load_questions(
    source: str,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    split: str = "train",
    limit: int | None = None,
) -> list[Question]:
    """Questions with string ids (the row number when the set has no id column), in file order."""
    rows = load_rows(source, split)
    columns = rows.column_names
    q_col = _column(source, columns, question_field, QUESTION_FIELDS, "question", required=True)
    a_col = _column(source, columns, answer_field, ANSWER_FIELDS, "answer", required=False)
    id_col = _column(source, columns, id_field, ID_FIELDS, "id", required=False)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    questions, seen = [], set()
    for i, row in enumerate(rows):
        qid = str(row[id_col]) if id_col else str(i)
        text = row[q_col]
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{source}: question {qid!r} (row {i}) has an empty {q_col!r} field")
        if qid in seen:
            raise UserError(f"{source}: id {qid!r} in column {id_col!r} is not unique (row {i})")
        seen.add(qid)
        answer = row[a_col] if a_col else None
        questions.append(Question(qid, text, None if answer is None else str(answer)))
    if not questions:
        raise UserError(f"{source}: no questions found")
    return questions


def _column(source, columns, given, candidates, what, required):
    if given is not None:
        if given not in columns:
            raise UserError(f"{source}: no {what} column {given!r}; the columns are {columns}")
        return given
    found = next((c for c in candidates if c in columns), None)
    if found is None and required:
        raise UserError(
            f"{source}: cannot find a {what} column (tried {list(candidates)}); the columns are {columns}; "
            f"name it with --{what}-field"
        )
    return found


def chat_messages(question: str, system_prompt: str | None = None) -> list[dict]:
    """The prompt as chat messages: an optional system message, then the user's question."""
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": question}
    ]


def build_prompt(tokenizer, question: str, system_prompt: str | None = None, prefix: str = "") -> list[int]:
    """Token ids of the chat-formatted prompt, ending with the assistant turn's opening and `prefix`
    (e.g. a thinking block's opening tag); special tokens come from the tokenizer's own template."""
    if not tokenizer.chat_template:
        raise UserError(f"tokenizer of {tokenizer.name_or_path!r} has no chat template")
    messages = chat_messages(question, system_prompt)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefix
    return tokenizer(text, add_special_tokens=False).input_ids


def questions_fingerprint(questions: list[Question]) -> str:
    """A hash of the question set's content (ids, texts, gold answers), stored with a run: a file
    edited between a run and its resume is refused instead of mixing two versions in one run."""
    digest = hashlib.sha256()
    for q in questions:
        digest.update(json.dumps([q.id, q.question, q.answer]).encode())
    return digest.hexdigest()


def _normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def overlapping(questions: list[Question], others: list[Question]) -> list[tuple[str, str]]:
    """(id, other id) of every question asked in both sets (same text up to case and spacing)."""
    index = {_normalised(q.question): q.id for q in others}
    return [(q.id, index[key]) for q in questions if (key := _normalised(q.question)) in index]


def thinking_markers(tokenizer, prompt: str) -> tuple[str, str] | None:
    """(opening, closing) if the prompt leaves a thinking block open: an added token `<x>` whose
    `</x>` is also an added token, present in the prompt and not closed after its last occurrence."""
    added = tokenizer.get_added_vocab()
    for token in added:
        if token.startswith("<") and not token.startswith("</") and token.endswith(">"):
            closing = "</" + token[1:]
            if closing in added and token in prompt and closing not in prompt.rsplit(token, 1)[1]:
                return token, closing
    return None
