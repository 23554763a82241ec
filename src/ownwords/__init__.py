"""ownwords: reasoning traces in the student's own words (Reverse Speculative Decoding), and the
distillation loop around them. Every stage is a config dataclass and a function:

    from ownwords import GenerateConfig, SelectConfig, ExportConfig, generate, select, export

    generate(GenerateConfig(teacher="t", student="s", questions="q.jsonl", store="runs/s.sqlite", run="rsd"))
    select(SelectConfig(store="runs/s.sqlite", run="rsd"))
    export(ExportConfig(store="runs/s.sqlite", run="rsd", out="data/rsd.jsonl"))

then `train(TrainConfig(...))`, `evaluate(EvalConfig(...))`, `analyze(AnalyzeConfig(...))`, or all of
them at once: `experiment("recipes/demo.yaml")` (`load_experiment`, `plan` to inspect one). Names are
imported on first use, so `import ownwords` stays light.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ownwords")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

_API = {
    **dict.fromkeys(("generate",), "ownwords.stages.generate"),
    **dict.fromkeys(("GenerateConfig", "GenerateResult", "PRESETS"), "ownwords.stages.generate_config"),
    **dict.fromkeys(("select",), "ownwords.stages.select"),
    **dict.fromkeys(("SelectConfig", "SelectResult"), "ownwords.stages.select_config"),
    **dict.fromkeys(("export",), "ownwords.stages.export"),
    **dict.fromkeys(("ExportConfig", "ExportResult"), "ownwords.stages.export_config"),
    **dict.fromkeys(("train",), "ownwords.stages.train"),
    **dict.fromkeys(("TrainConfig", "TrainResult"), "ownwords.stages.train_config"),
    **dict.fromkeys(("distill",), "ownwords.stages.distill"),
    **dict.fromkeys(("DistillConfig", "DistillResult"), "ownwords.stages.distill_config"),
    **dict.fromkeys(("evaluate",), "ownwords.stages.evaluate"),
    **dict.fromkeys(("EvalConfig",), "ownwords.stages.evaluate_config"),
    **dict.fromkeys(("analyze",), "ownwords.stages.analyze"),
    **dict.fromkeys(("AnalyzeConfig", "AnalyzeResult"), "ownwords.stages.analyze_config"),
    **dict.fromkeys(("probe", "probe_pair"), "ownwords.stages.probe"),
    **dict.fromkeys(("ProbeConfig", "ProbeResult"), "ownwords.stages.probe_config"),
    **dict.fromkeys(("prune_layers",), "ownwords.models.prune"),
    **dict.fromkeys(("experiment",), "ownwords.experiment.runner"),
    **dict.fromkeys(("ExperimentConfig", "load_experiment", "plan"), "ownwords.experiment.plan"),
    **dict.fromkeys(("Engine", "Request", "Trace", "Emitted", "Sampling", "RSD"), "ownwords.decoding.engine"),
    **dict.fromkeys(("AcceptanceRule", "Support", "support_from_logits"), "ownwords.rsd.sampling"),
    **dict.fromkeys(("load_model", "load_pair"), "ownwords.models.loading"),
    **dict.fromkeys(("make_tiny_pair",), "ownwords.models.tiny"),
    **dict.fromkeys(("TraceStore",), "ownwords.data.store"),
    **dict.fromkeys(("grade", "extract_answer"), "ownwords.data.verify"),
    **dict.fromkeys(("UserError",), "ownwords.errors"),
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'ownwords' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
