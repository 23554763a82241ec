"""`ownwords probe`'s config (generate's, plus the probe's own) and result (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import Result
from ..errors import check_fields
from .generate_config import GenerateConfig


@dataclass
class ProbeConfig(GenerateConfig):
    """The run you intend (every generate option), and how much of it to try here."""

    sample_questions: int = field(default=8, metadata={"help": "Questions of the set the short runs use."})
    probe_tokens: int = field(
        default=128, metadata={"help": "New tokens per sample in the short runs (the projection uses max_new_tokens)."}
    )
    thresholds: list[float] = field(
        default_factory=lambda: [0.001, 0.003, 0.01, 0.03, 0.1],
        metadata={"help": "p_th values whose share of teacher tokens and expected fallback rate are reported."},
    )
    out: str = field(default="probe", metadata={"help": "Folder for probe.json and probe.md."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(
            self,
            [
                (self.sample_questions >= 1, "sample_questions", "an integer >= 1"),
                (self.probe_tokens >= 1, "probe_tokens", "an integer >= 1"),
                (bool(self.thresholds) and all(0 < t <= 1 for t in self.thresholds), "thresholds", "values in (0, 1]"),
            ],
        )


@dataclass(eq=False)
class ProbeResult(Result):
    """What the probe found; `verdict` is "OK" or the first blocking problem and the option that fixes it."""

    verdict: str
    blocked: bool
    warnings: list
    vocabulary: dict
    templates: dict
    acceptance: dict
    cost: dict
    seconds: float = 0.0
