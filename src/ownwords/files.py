"""Files: content hashes (memoised, so re-hashing gigabytes of weights happens once per file version),
atomic writes that never follow a symlink, and the cache folder."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path

from .errors import UserError

try:
    import fcntl
except ImportError:  # not POSIX: no file locks
    fcntl = None


def display_name(name_or_path: str) -> str:
    """A model as tables, plots and reports name it: a folder's last part, a hub id's name."""
    return Path(name_or_path.rstrip("/")).name or name_or_path


def cache_dir() -> Path:
    """~/.cache/ownwords (or $XDG_CACHE_HOME/ownwords)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ownwords"


_MEMO: dict[str, str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, memoised under its (real path, size, modification time): a copied
    or moved file is hashed again and gives the same hash; an overwritten one gives its new hash."""
    path = Path(path)
    stat = path.stat()
    key = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    memo = _memo_file()
    if key not in _MEMO:
        _MEMO.update(_read_memo(memo))
    if key not in _MEMO:
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                sha.update(block)
        _MEMO[key] = sha.hexdigest()
        if stat.st_size >= 1 << 20:  # worth remembering across processes
            _write_memo(memo, key, _MEMO[key])
    return _MEMO[key]


def _memo_file() -> Path:
    return cache_dir() / "file-sha256.json"


def _read_memo(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or damaged: it is only a memo
        return {}
    return data if isinstance(data, dict) else {}


def _write_memo(path: Path, key: str, value: str) -> None:
    try:
        memo = _read_memo(path) | {key: value}
        write_atomically(path, json.dumps(dict(list(memo.items())[-10_000:])))
    except OSError:  # a read-only cache costs time, never a result
        pass


def write_atomically(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file beside it and a rename: a crash leaves the old
    file or the new one, never half of one, and a symlink at `path` is replaced, not written through."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | Path, what: str):
    """A JSON file another run of ownwords wrote; a damaged one is a UserError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{what} {str(path)!r} is damaged ({err})") from None


def check_writable(folder: str | Path, what: str) -> None:
    """Create `folder` if needed and write a probe there: an output that cannot be written is an
    error naming it before any work is done, not a traceback after it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserError(f"{what} {str(folder)!r}: cannot write there ({err.strerror or err})") from None


FULL = (errno.ENOSPC, errno.EDQUOT)
DENIED = (errno.EROFS, errno.EACCES, errno.EPERM)


def environment_error(err: BaseException) -> str | None:
    """One line for an error of the machine rather than of ownwords (a full disk, a read-only or
    forbidden file), or None. `--debug` still shows its traceback."""
    if not isinstance(err, OSError) or err.errno not in FULL + DENIED:
        return None
    where = f" writing {err.filename!r}" if err.filename else ""
    if err.errno in FULL:
        return f"no space left on the device{where}: free space and run the same command again (finished work is kept)"
    return f"permission denied{where} ({err.strerror}): make it writable, or write elsewhere"


def hold_lock(path: Path, busy: UserError | None, waiting=None):
    """An exclusive lock on the file `path`, held while the returned handle is open (the OS drops it
    when the holder dies). If another process holds it: raises `busy`, or, when `busy` is None, calls
    `waiting()` and waits for it. None where there are no file locks (not POSIX)."""
    if fcntl is None:
        return None
    handle = open(path, "a+")  # noqa: SIM115 -- held open by the caller
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if busy is not None:
            handle.close()
            raise busy from None
        if waiting is not None:
            waiting()
        fcntl.flock(handle, fcntl.LOCK_EX)
    return handle
