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
