"""Questions in, prompts out: loading question sets (hub id or local file) and chat-formatting them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

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


def load_rows(source: str, split: str = "train"):
    """A `datasets.Dataset` from a local jsonl/json/parquet/csv file or a Hugging Face dataset id."""
    from datasets import load_dataset

    path = Path(source).expanduser()
    if path.suffix in LOCAL_BUILDERS or path.exists() or source.startswith((".", "/", "~")):
        if not path.is_file():
            raise FileNotFoundError(f"questions file {source!r} does not exist")
        if path.suffix not in LOCAL_BUILDERS:
            raise ValueError(f"questions file {source!r}: expected one of {', '.join(LOCAL_BUILDERS)}")
        return load_dataset(LOCAL_BUILDERS[path.suffix], data_files=str(path), split="train")
    return load_dataset(source, split=split)


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
            raise ValueError(f"{source}: question {qid!r} (row {i}) has an empty {q_col!r} field")
        if qid in seen:
            raise ValueError(f"{source}: id {qid!r} in column {id_col!r} is not unique (row {i})")
        seen.add(qid)
        answer = row[a_col] if a_col else None
        questions.append(Question(qid, text, None if answer is None else str(answer)))
    if not questions:
        raise ValueError(f"{source}: no questions found")
    return questions


def _column(source, columns, given, candidates, what, required):
    if given is not None:
        if given not in columns:
            raise ValueError(f"{source}: no {what} column {given!r}; the columns are {columns}")
        return given
    found = next((c for c in candidates if c in columns), None)
    if found is None and required:
        raise ValueError(
            f"{source}: cannot find a {what} column (tried {list(candidates)}); the columns are {columns}; "
            f"name it with --{what}-field"
        )
    return found


def build_prompt(tokenizer, question: str, system_prompt: str | None = None, prefix: str = "") -> list[int]:
    """Token ids of the chat-formatted prompt, ending with the assistant turn's opening and `prefix`
    (e.g. a thinking block's opening tag); special tokens come from the tokenizer's own template."""
    if not tokenizer.chat_template:
        raise ValueError(f"tokenizer of {tokenizer.name_or_path!r} has no chat template")
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": question})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefix
    return tokenizer(text, add_special_tokens=False).input_ids
