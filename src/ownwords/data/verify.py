"""Offline answer checking: extract a response's final answer and grade it against a gold answer.

`grade` returns True / False, or None when the gold answer cannot be checked (e.g. a proof). Nothing
from a response is evaluated as code: math answers are parsed as LaTeX by math-verify (its LaTeX
parser, never sympy's `eval`-based expression parser), and every extraction is a linear scan with
length caps, so hostile inputs finish in bounded time.
"""

from __future__ import annotations

import re
import threading
from decimal import Decimal, InvalidOperation

from ..errors import UserError

KINDS = ("math", "integer", "number", "choice")
MAX_ANSWER_CHARS = 1000  # a longer "final answer" is not an answer; also bounds math-verify's work
MAX_GOLD_CHARS = 200  # a longer gold without \boxed{} is a worked solution or proof: unverifiable
MAX_EXPONENT = 100  # numbers beyond 1e100 (or under 1e-100) are not answers to compare
BOX_RE = re.compile(r"\\(?:boxed|fbox)")
BARE_BOX_RE = re.compile(r"\\(?:boxed|fbox) +([^\s$]{1,1000})")  # at most MAX_ANSWER_CHARS
BRACE_RE = re.compile(r"[{}]")
NUMBER = re.compile(r"-?[$€£]?\s?\d[\d,]*(?:\.\d+)?")
CHOICE_PATTERNS = (
    re.compile(r"\\boxed\{\s*\(?([A-Da-d])\)?\s*\}"),
    re.compile(r"(?i:answer)\s*(?:is|:)\s*\**\(?\s*\$?(?:\\text\{)?\(?([A-D])\b"),
)


def last_boxed(text: str) -> str | None:
    """Content of the last balanced `\\boxed{...}` / `\\fbox{...}` (or `\\boxed 5`), else None.

    Linear in the text: one regex pass finds the commands, one pass over the braces matches them, so
    a response full of unbalanced boxes costs no more than any other of its length.
    """
    commands = [m.start() for m in BOX_RE.finditer(text)]
    if not commands:
        return None
    closing = _matching_braces(text)
    for start in reversed(commands):  # the last box first; an unbalanced one yields to the one before
        found = _box_content(text, start, closing)
        if found is not None:
            return found
    return None


def _matching_braces(text: str) -> dict[int, int]:
    """{index of '{': index of its matching '}'} for every balanced pair."""
    closing, stack = {}, []
    for m in BRACE_RE.finditer(text):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            closing[stack.pop()] = m.start()
    return closing


def _box_content(text: str, start: int, closing: dict[int, int]) -> str | None:
    head = text[start : start + 8]
    if "{" not in head:  # `\boxed 5`: the next whitespace-delimited token
        match = BARE_BOX_RE.match(text, start)
        return match.group(1) if match else None
    i = start + head.index("{")
    j = closing.get(i)
    if j is None or j - i > MAX_ANSWER_CHARS + 1:
        return None  # unbalanced, or longer than any answer
    return text[i + 1 : j].strip()


def final_part(response: str, thinking_end: str | None = None) -> str:
    """The text after the last end-of-thinking marker when there is one, else the whole response."""
    if thinking_end and thinking_end in response:
        return response.rsplit(thinking_end, 1)[1]
    return response


def extract_answer(response: str, kind: str = "math", thinking_end: str | None = None) -> str | None:
    """The response's final answer as text (None when it gives none); prefers the part after thinking."""
    _check_kind(kind)
    for text in dict.fromkeys((final_part(response, thinking_end), response)):  # after thinking, then all
        answer = _extract(text, kind)
        if answer is not None:
            return answer
    return None


def _extract(text: str, kind: str) -> str | None:
    if kind == "choice":
        hits = [m for p in CHOICE_PATTERNS for m in p.finditer(text[-20_000:])]
        return max(hits, key=lambda m: m.start()).group(1).upper() if hits else None
    boxed = last_boxed(text)
    if boxed is not None or kind in ("math", "integer"):
        return boxed
    numbers = NUMBER.findall(text[-2_000:])  # number kind: the last number written
    return numbers[-1] if numbers else None


def grade(response: str, gold: str, kind: str = "math", thinking_end: str | None = None) -> bool | None:
    """Is the response's final answer equal to `gold`? None if `gold` cannot be checked."""
    _check_kind(kind)
    gold_answer = gold_value(gold, kind)
    if gold_answer is None:
        return None
    answer = extract_answer(response, kind, thinking_end)
    if answer is None:
        return False
    if kind == "math":
        return _math_equal(gold_answer, answer)
    if kind == "choice":
        return answer == gold_answer
    value = _to_number(answer)
    return value is not None and value == gold_answer and (kind == "number" or value == value.to_integral_value())


def gold_value(gold: str, kind: str):
    """The checkable form of a gold answer, or None (a proof, an empty or non-numeric answer...)."""
    gold = str(gold).strip()
    if kind == "math":
        boxed = last_boxed(gold)
        if boxed is not None:
            return boxed
        return gold if 0 < len(gold) <= MAX_GOLD_CHARS else None
    if kind == "choice":
        return gold.strip("() ").upper() if re.fullmatch(r"\(?[A-Da-d]\)?", gold) else None
    if kind == "number" and "####" in gold:
        gold = gold.rsplit("####", 1)[1]
    value = _to_number(gold)
    if value is None or (kind == "integer" and value != value.to_integral_value()):
        return None
    return value


def _to_number(text: str) -> Decimal | None:
    """'1,234.00' / '$5' / '025' / '\\$5' / '12.' -> Decimal; None if it is not a plain number."""
    cleaned = re.sub(r"\\[$%]|[$€£%\s]|\\,|\\!|\\text\{[^}]*\}", "", text.replace(",", "")).rstrip(".")
    if len(cleaned) > 64:
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    # 1e999999999 is a short string of a billion digits: no answer is that large (and int() of it hangs)
    return value if value.is_finite() and abs(value.adjusted()) <= MAX_EXPONENT else None


def _math_equal(gold: str, answer: str) -> bool:
    from math_verify import LatexExtractionConfig, parse, verify

    # math-verify bounds its own work with SIGALRM, which only the main thread may use.
    limit = 2 if threading.current_thread() is threading.main_thread() else None
    config = [LatexExtractionConfig()]
    gold_parsed = parse(f"${gold}$", extraction_config=config, parsing_timeout=limit)
    answer_parsed = parse(f"${answer}$", extraction_config=config, parsing_timeout=limit)
    if not gold_parsed or not answer_parsed:
        return gold.replace(" ", "") == answer.replace(" ", "")
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=limit))


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UserError(f"answer kind {kind!r} is unknown; expected one of {', '.join(KINDS)}")
