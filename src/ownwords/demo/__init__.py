"""`ownwords demo`: the synthetic task (task.py), the cached tiny pair (models.py), the experiment of
the shipped recipe `demo` (run.py) and the command's config (config.py). Names are imported on first
use: the task module is loaded by the benchmark registry, which must not pull the experiment in."""

from importlib import import_module

_API = {
    **dict.fromkeys(("DEMO_LAYOUT", "KIND_FILE", "SCALES", "DemoConfig", "Scale"), "ownwords.demo.config"),
    **dict.fromkeys(("_waiting", "cache_entries", "tiny_pair"), "ownwords.demo.models"),
    **dict.fromkeys(("_claim", "demo_experiment", "run_demo"), "ownwords.demo.run"),
    **dict.fromkeys(("ARITHMETIC", "problem", "terse", "verbose", "write_split"), "ownwords.demo.task"),
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'ownwords.demo' has no attribute {name!r}")
