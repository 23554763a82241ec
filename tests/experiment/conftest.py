import pytest


@pytest.fixture(scope="session")
def demo_models(request):
    """The demo's tiny teacher and student, trained (about 2.5 minutes on 2 idle cores) or taken from
    the demo's model cache: random models write no well-formed answers, so nothing would pass select.
    Training them shows its progress bars (pytest's capture is lifted for it)."""
    import sys

    from ownwords.demo import SCALES, cache_entries, tiny_pair

    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        if not all((p / "model.safetensors").exists() for p in cache_entries(_cache(), SCALES["quick"])):
            sys.stderr.write(f"\ntraining the demo's tiny models once (cached in {_cache()})\n")
        return tiny_pair(_cache(), SCALES["quick"], fresh=False)



def _cache():
    import os
    from pathlib import Path

    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ownwords" / "demo"


@pytest.fixture(scope="session")
def task(tmp_path_factory):
    """A few train and test questions of the demo's task."""
    from ownwords.demo import write_split

    folder = tmp_path_factory.mktemp("task")
    write_split(folder / "train.jsonl", 12, seed=1)
    write_split(folder / "test.jsonl", 12, seed=2, exclude=folder / "train.jsonl")
    return folder
