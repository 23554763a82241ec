"""Names that become file names, runs and report rows: one rule for all of them, and bounds on what
an experiment may expand to, both checked before any stage runs.

A name is a slug: ASCII letters, digits and ``- _ . @ =``, starting with a letter or digit, at most
64 characters (so never ``..``, an absolute path, a ``/``, markup or math text). Arm names must be
slugs; a swept value that is not one is named by its position (``v1``, ``v2`` ...; the report shows
the value); a student's label is its folder name with every other character replaced by ``_``.
The planner joins slugs with its own separators (``~`` student, ``.r2`` round, ``-seed0``,
``-into-`` another student), so what it builds is safe too, and checked unique.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError

SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@=-]{0,63}")
MAX_SEEDS_ROUNDS = 100
MAX_SWEEP = 1000
MAX_STAGES = 20_000


def is_slug(name) -> bool:
    return isinstance(name, str) and SLUG.fullmatch(name) is not None


def check_name(name, where: str) -> str:
    if not is_slug(name):
        raise UserError(
            f"{where} {name!r} is not a usable name: names become file names and report rows, so they take "
            "ASCII letters, digits and - _ . @ = only, start with a letter or digit, and have at most 64 characters"
        )
    return name


def value_name(value, position: int) -> str:
    """A swept value as it appears in an arm's name: itself when it is a slug, else its position."""
    text = str(value)
    return text if is_slug(text) and len(text) <= 24 else f"v{position}"


def readable_tag(model: str) -> str:
    """A student's label from its path or hub id: the last part, made a slug."""
    tag = re.sub(r"[^A-Za-z0-9_.@=-]+", "_", Path(model.rstrip("/")).name).lstrip("._-@=")[:64]
    return tag or "student"


def check_plan_size(trace_sets: int, models: int) -> None:
    stages = 3 * trace_sets + 2 * models + 2
    if stages > MAX_STAGES:
        raise UserError(
            f"the experiment expands to {stages} stages ({trace_sets} trace sets, {models} models), more than "
            f"{MAX_STAGES}; fewer arms, sweep values, students, seeds or rounds"
        )
