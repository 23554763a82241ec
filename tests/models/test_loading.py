import os

import torch

from ownwords.models.loading import display_name, set_cpu_threads


def test_cpu_threads_leave_busy_cores_alone(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(os, "cpu_count", lambda: 8)
        monkeypatch.setattr(torch, "get_num_threads", lambda: 8)  # torch's default: the physical cores
        monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
        assert set_cpu_threads(0) == 7  # an idle machine: the free cores
        monkeypatch.setattr(os, "getloadavg", lambda: (7.5, 0.0, 0.0))
        assert set_cpu_threads(0) == 1  # a loaded one: never oversubscribe
        assert set_cpu_threads(3) == 3  # --threads wins
    finally:
        monkeypatch.undo()
        torch.set_num_threads(before)


def test_display_names():
    assert display_name("Qwen/Qwen3-0.6B") == "Qwen3-0.6B"
    assert display_name("/tmp/runs/models/sft-rsd-seed0/") == "sft-rsd-seed0"


def test_a_misspelt_local_path_is_missing_at_once_never_looked_up_on_the_hub(tmp_path, monkeypatch):
    import pytest

    from ownwords.errors import MissingInput
    from ownwords.models import loading

    monkeypatch.setattr(loading, "hub_reachable", lambda: pytest.fail("a path was looked up on the hub"))
    for name in ("ownwords-demo/models/studnt", "./studnt", str(tmp_path / "nope"), "~/no/such/model"):
        with pytest.raises(MissingInput, match="no such folder"):
            loading.load_tokenizer(name)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingInput, match="no model in that folder"):
        loading.load_tokenizer(str(tmp_path / "empty"))


def test_a_hub_id_offline_is_one_line_without_retries(monkeypatch):
    import pytest

    from ownwords.errors import MissingInput
    from ownwords.models import loading

    monkeypatch.setattr(loading, "hub_reachable", lambda: False)  # no network here, as on this machine
    with pytest.raises(MissingInput, match="cannot be reached.*HF_HUB_OFFLINE=1"):
        loading.load_model("some-org/some-model", "cpu", "float32")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(loading, "hub_reachable", lambda: pytest.fail("the network was tried offline"))
    with pytest.raises(MissingInput, match="HF_HUB_OFFLINE is set"):
        loading.load_tokenizer("some-org/some-model")
