"""The trace store: SQLite in WAL mode, one row per finished sample, each written atomically.

A store holds several runs (e.g. an RSD run and a teacher-only run). Each run keeps the config it
was started with; resuming it with a different config is refused, naming the keys that differ.
Per-token arrays are JSON, so `sqlite3` alone can check a store. Every SQL statement of ownwords
lives in this module.

Safety: a store is marked as ownwords' own (SQLite `application_id`); a file of another program is
refused and never modified. A store that must be written is probed for writability when opened, so
a read-only store fails before any work is done. A run being generated is locked (`lock_run`), so a
second process on the same (store, run) is refused; the lock is an OS file lock, released when its
process ends, however it ends, so a killed run never blocks its resume.
"""

from __future__ import annotations

import json
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import MissingInput, UserError
from ..files import fcntl, hold_lock  # noqa: F401 (hold_lock: part of this module's API)

APPLICATION_ID = 0x4F574E44  # "OWND": marks an SQLite file as an ownwords store
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
CREATE TABLE IF NOT EXISTS selection (
    run TEXT NOT NULL,
    question_id TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    status TEXT NOT NULL,      -- chosen | passed | dropped
    reason TEXT,               -- for dropped: the first filter that dropped it
    answer TEXT,               -- the extracted final answer
    correct INTEGER,           -- 1 / 0 / NULL (gold answer unverifiable, or not checked)
    PRIMARY KEY (run, question_id, sample_index)
);
CREATE TABLE IF NOT EXISTS selection_reports (run TEXT PRIMARY KEY, config TEXT NOT NULL, report TEXT NOT NULL);
"""
TABLES = ("runs", "samples", "selection", "selection_reports")
JSON_COLUMNS = ("token_ids", "teacher_probs", "scores", "fallbacks", "trials")


class StoreError(UserError):
    """The store cannot be used as asked (missing, foreign, read-only, locked, or a run resumed
    with another config)."""


class TraceStore:
    """An ownwords store. `create`: make the file if it is missing; `write`: the caller will write
    (checked now, before any work)."""

    def __init__(self, path: str | Path, create: bool = True, write: bool = True):
        self.path = Path(path)
        self._locks: dict[str, object] = {}
        exists = self.path.is_file()
        if not exists and not create:
            raise MissingInput(f"store {str(path)!r} does not exist")
        if self.path.exists() and not exists:
            raise StoreError(f"store {str(path)!r} is not a file")
        try:
            if not exists:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            if write:
                self._probe_writable()
            # explicit transactions only; a writer in another process is waited for, not an error
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._check_ownership()
            if write:
                self._prepare_for_writing()
        except sqlite3.Error as err:
            raise StoreError(f"store {str(path)!r}: cannot open it {self._why(err, write)}") from err
        except OSError as err:
            raise StoreError(
                f"store {str(path)!r}: cannot open it for writing: it or its folder is read-only or missing ({err})"
            ) from err
        self.db.row_factory = sqlite3.Row

    @staticmethod
    def _why(err: sqlite3.Error, write: bool) -> str:
        if "readonly" in str(err) or "read-only" in str(err):
            return f"for writing: it (or its folder) is read-only ({err})"
        if "not a database" in str(err):
            return f"(not an SQLite file: {err})"
        return f"{'for writing ' if write else ''}({err})"

    def _check_ownership(self) -> None:
        """Refuse an SQLite file that another program made; read-only, so it is never modified."""
        app_id = self.db.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app_id == APPLICATION_ID or not tables:
            return
        # ownwords stores written before the mark have exactly our tables and the samples' columns
        ours = app_id == 0 and tables <= set(TABLES) and {"runs", "samples"} <= tables
        if ours:
            columns = [r[1] for r in self.db.execute("PRAGMA table_info(samples)")]
            ours = columns == _schema_columns("samples")
        if not ours:
            raise StoreError(
                f"store {str(self.path)!r} is an SQLite file of another program (tables {sorted(tables)}, "
                f"application_id {app_id}); ownwords does not touch it: choose another store path"
            )

    def _probe_writable(self) -> None:
        """The file and its folder (where SQLite keeps its WAL) can be written: checked before SQLite
        opens the file, which would otherwise open a read-only store read-only and fail later."""
        if self.path.exists():
            with open(self.path, "r+b"):  # a read-only file fails here, even for root (chattr +i)
                pass
        with tempfile.TemporaryFile(dir=self.path.parent):  # a read-only folder fails here
            pass

    def _prepare_for_writing(self) -> None:
        """Add what is missing of the schema and the mark; an existing store is not changed."""
        if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process crash
        missing = [t for t in TABLES if not self._has(t)]
        if missing or self.db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def close(self) -> None:
        for handle in self._locks.values():
            handle.close()  # releases the lock
        self._locks.clear()
        self.db.close()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- runs ------------------------------------------------------------------------------------

    def lock_run(self, run: str) -> None:
        """Hold an exclusive lock on (store, run) until `close`; refuse if another process holds it."""
        if fcntl is None or run in self._locks:
            return
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", run)[:64]
        lock_path = self.path.with_name(f"{self.path.name}.{slug}.lock")
        self._locks[run] = hold_lock(
            lock_path,
            StoreError(
                f"store {str(self.path)!r}: run {run!r} is being written by another process (lock "
                f"{str(lock_path)!r}); wait for it to finish, or use another run or store"
            ),
        )

    def runs(self) -> dict[str, dict]:
        if not self._has("runs"):
            return {}
        return {r[0]: json.loads(r[1]) for r in self.db.execute("SELECT run, config FROM runs")}

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
                "resume with the same settings, or pick another run or store"
            )
        return True

    def drop_run(self, run: str) -> None:
        """Delete a run, its samples and its selection, in one transaction (the caller holds its lock)."""
        with self.db:
            self.db.execute("BEGIN")
            for table in TABLES:
                self.db.execute(f"DELETE FROM {table} WHERE run = ?", (run,))  # noqa: S608 (fixed names)

    def keep_questions(self, run: str, questions: dict[str, tuple[str, str | None]], fingerprint: str) -> int:
        """Keep the run's samples of the questions asked exactly as in `questions` ({id: (question,
        gold answer)}); drop those of edited or removed questions (a resume asks them again), and
        record `fingerprint` as the run's question set. Returns how many samples were dropped."""
        stale = [(qid,) for qid, asked in self.stored_questions(run).items() if questions.get(qid) != asked]
        config = self.require_run(run) | {"questions_sha256": fingerprint}
        with self.db:
            self.db.execute("BEGIN")
            before = self.db.total_changes
            self.db.executemany("DELETE FROM samples WHERE run = ? AND question_id = ?", [(run, *q) for q in stale])
            dropped = self.db.total_changes - before
            self.db.executemany("DELETE FROM selection WHERE run = ? AND question_id = ?", [(run, *q) for q in stale])
            self.db.execute("UPDATE runs SET config = ? WHERE run = ?", (json.dumps(config, sort_keys=True), run))
        return dropped

    def require_run(self, run: str) -> dict:
        """The run's config; a clear error naming the runs there are when it does not exist."""
        runs = self.runs()
        if run not in runs:
            raise StoreError(f"store {str(self.path)!r} has no run {run!r}; it has {sorted(runs)}")
        return runs[run]

    # -- samples ---------------------------------------------------------------------------------

    def done(self, run: str) -> set[tuple[str, int]]:
        rows = self.db.execute("SELECT question_id, sample_index FROM samples WHERE run = ?", (run,))
        return {(r[0], r[1]) for r in rows}

    def stored_questions(self, run: str) -> dict[str, tuple[str, str | None]]:
        """{question id: (question text, gold answer)} as the run's samples recorded them."""
        query = "SELECT DISTINCT question_id, question, answer FROM samples WHERE run = ?"
        return {r[0]: (r[1], r[2]) for r in self.db.execute(query, (run,))}

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
        self.require_run(run)
        query = "SELECT * FROM samples WHERE run = ? ORDER BY question_id, sample_index"
        for row in self.db.execute(query, (run,)):
            yield _decoded(row)

    def summary(self, run: str) -> dict:
        """Totals over every sample of `run`."""
        row = self.db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT question_id), COALESCE(SUM(n_tokens), 0), "
            "COALESCE(SUM(n_fallbacks), 0) FROM samples WHERE run = ?",
            (run,),
        ).fetchone()
        query = "SELECT finish_reason, COUNT(*) FROM samples WHERE run = ? GROUP BY 1"
        reasons = {r[0]: r[1] for r in self.db.execute(query, (run,))}
        samples, questions, tokens, fallbacks = row
        return dict(
            run=run,
            store=str(self.path),
            samples=samples,
            questions=questions,
            tokens=tokens,
            fallback_rate=fallbacks / tokens if tokens else 0.0,
            finish_reasons=reasons,
        )

    # -- selection -------------------------------------------------------------------------------

    def write_selection(self, run: str, rows: list[tuple], config: dict, report: dict) -> None:
        """Replace the run's selection in one transaction: a failure leaves the previous one intact.
        rows: (question_id, sample_index, status, reason, answer, correct)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM selection WHERE run = ?", (run,))
            self.db.executemany(
                "INSERT INTO selection VALUES (?, ?, ?, ?, ?, ?, ?)", [(run, *r) for r in rows]
            )
            self.db.execute(
                "INSERT OR REPLACE INTO selection_reports VALUES (?, ?, ?)",
                (run, json.dumps(config), json.dumps(report)),
            )

    def selection_report(self, run: str) -> dict | None:
        """The report of the run's last `select` (None before one ran)."""
        if not self._has("selection_reports"):
            return None
        row = self.db.execute("SELECT report FROM selection_reports WHERE run = ?", (run,)).fetchone()
        return json.loads(row[0]) if row else None

    def chosen(self, run: str) -> list[dict]:
        """The run's chosen samples, in question then sample order."""
        self.require_run(run)
        if (
            not self._has("selection")
            or not self.db.execute("SELECT 1 FROM selection WHERE run = ?", (run,)).fetchone()
        ):
            raise StoreError(
                f"store {str(self.path)!r} has no selection for run {run!r}; run `ownwords select` first"
            )
        query = (
            "SELECT s.* FROM samples s JOIN selection c USING (run, question_id, sample_index) "
            "WHERE s.run = ? AND c.status = 'chosen' ORDER BY s.question_id, s.sample_index"
        )
        return [_decoded(row) for row in self.db.execute(query, (run,))]

    def selection(self, run: str) -> dict[tuple[str, int], dict]:
        """What `select` decided for each sample of the run ({} before it ran): status, reason, the
        extracted answer, correct (1 / 0 / None)."""
        if not self._has("selection"):
            return {}
        query = (
            "SELECT question_id, sample_index, status, reason, answer, correct FROM selection WHERE run = ?"
        )
        return {
            (r[0], r[1]): dict(status=r[2], reason=r[3], answer=r[4], correct=r[5])
            for r in self.db.execute(query, (run,))
        }

    def _has(self, table: str) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self.db.execute(query, (table,)).fetchone() is not None


def _decoded(row) -> dict:
    out = dict(row)
    for col in JSON_COLUMNS:
        out[col] = json.loads(out[col])
    return out


def _schema_columns(table: str) -> list[str]:
    body = SCHEMA.split(f"CREATE TABLE IF NOT EXISTS {table} (", 1)[1].split(");", 1)[0]
    lines = [line.split("--")[0].strip() for line in body.splitlines()]
    return [line.split()[0] for line in lines if line and not line.startswith("UNIQUE")]
