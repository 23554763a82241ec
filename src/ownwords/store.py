"""The trace store: SQLite in WAL mode, one row per finished sample, each written atomically.

A store holds several runs (e.g. an RSD run and a teacher-only run). Each run keeps the config it
was started with; resuming it with a different config is refused, naming the keys that differ.
Per-token arrays are JSON, so `sqlite3` alone can check a store.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY,
    config TEXT NOT NULL,      -- JSON of the generation config
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    run TEXT NOT NULL REFERENCES runs(run),
    question_id TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    question TEXT NOT NULL,
    answer TEXT,
    prompt TEXT NOT NULL,          -- decoded prompt, template and generation prefix included
    text TEXT NOT NULL,            -- decoded trace (the final EOS token excluded)
    token_ids TEXT NOT NULL,       -- JSON list, student token ids, EOS included
    teacher_probs TEXT NOT NULL,   -- JSON list, T(x) per token (null without a teacher)
    scores TEXT NOT NULL,          -- JSON list, student acceptance score a(x) per token
    fallbacks TEXT NOT NULL,       -- JSON list of 0/1
    trials TEXT NOT NULL,          -- JSON list, proposals tried per token
    n_tokens INTEGER NOT NULL,
    n_fallbacks INTEGER NOT NULL,
    finish_reason TEXT NOT NULL,   -- eos | stop | length
    wall_seconds REAL NOT NULL,
    created REAL NOT NULL,
    UNIQUE (run, question_id, sample_index)
);
"""
JSON_COLUMNS = ("token_ids", "teacher_probs", "scores", "fallbacks", "trials")


class StoreError(ValueError):
    """The store cannot be used as asked (unopenable, or a run resumed with another config)."""


class TraceStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None)  # explicit transactions only
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process crash
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"store {str(path)!r}: cannot open it for writing ({err})") from err
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def runs(self) -> dict[str, dict]:
        return {r["run"]: json.loads(r["config"]) for r in self.db.execute("SELECT run, config FROM runs")}

    def open_run(self, run: str, config: dict, ignore: tuple[str, ...] = ()) -> None:
        """Register `run` with `config`, or check that it matches the stored one."""
        if self.check_run(run, config, ignore):
            return
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT INTO runs VALUES (?, ?, ?)", (run, json.dumps(config, sort_keys=True), time.time())
            )

    def check_run(self, run: str, config: dict, ignore: tuple[str, ...] = ()) -> bool:
        """True if `run` exists with a matching config (keys in `ignore` may differ: they do not change
        what is generated), False if it does not exist; raises if it exists with another config."""
        stored = self.runs().get(run)
        if stored is None:
            return False
        keys = sorted((set(stored) | set(config)) - set(ignore))
        differ = [k for k in keys if stored.get(k) != config.get(k)]
        if differ:
            changes = "; ".join(f"{k}: {stored.get(k)!r} -> {config.get(k)!r}" for k in differ)
            raise StoreError(
                f"store {str(self.path)!r} already holds run {run!r} made with another config ({changes}); "
                "resume with the same settings, or pick another --run or --store"
            )
        return True

    def done(self, run: str) -> set[tuple[str, int]]:
        rows = self.db.execute("SELECT question_id, sample_index FROM samples WHERE run = ?", (run,))
        return {(r[0], r[1]) for r in rows}

    def add(self, run: str, record: dict) -> None:
        """Insert one finished sample in its own transaction."""
        record = {**record, "run": run, "created": time.time()}
        for col in JSON_COLUMNS:
            record[col] = json.dumps(record[col])
        cols = ", ".join(record)
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                f"INSERT INTO samples ({cols}) VALUES ({', '.join('?' * len(record))})", list(record.values())
            )

    def samples(self, run: str) -> Iterator[dict]:
        """The run's samples, ordered by question then sample index, JSON columns decoded."""
        if run not in self.runs():
            raise StoreError(f"store {str(self.path)!r} has no run {run!r}; it has {sorted(self.runs())}")
        query = "SELECT * FROM samples WHERE run = ? ORDER BY question_id, sample_index"
        for row in self.db.execute(query, (run,)):
            out = dict(row)
            for col in JSON_COLUMNS:
                out[col] = json.loads(out[col])
            yield out
