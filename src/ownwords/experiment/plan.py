"""An experiment from one YAML: its arms, and the stages they expand to (nothing runs here).

The YAML names a teacher, one or more students, a question set and a list of arms; each stage's
section is that stage's own config (the same field names as its command). Every stage config is
built here, so a bad key or value is an error naming it before any model loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import read_mapping
from ..errors import UserError
from ..stages.analyze import AnalyzeConfig
from ..stages.evaluate import EvalConfig
from ..stages.export import ExportConfig
from ..stages.generate import PRESETS, GenerateConfig
from ..stages.select import SelectConfig
from ..stages.train import TrainConfig

KINDS = {
    # kind: (what it is, the generate options it fixes)
    "teacher": ("the teacher's own traces (p_th = 0)", dict(rule="threshold", threshold=0.0)),
    "rsd": ("RSD traces (any rule and value)", {}),
    "self": ("the student's own traces (p_th > 1: nothing accepted)", dict(rule="threshold", threshold=2.0)),
}
SECTIONS = {
    "generate": GenerateConfig,
    "select": SelectConfig,
    "export": ExportConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "analyze": AnalyzeConfig,
}
# Fields the experiment sets itself (wiring stages together); a section may not set them.
OWNED = {
    "generate": {"teacher", "student", "questions", "store", "run", "workers", "ray_address"},
    "select": {"store", "run"},
    "export": {"store", "run", "out", "overwrite"},
    "train": {"model", "dataset", "output_dir", "seed"},
    "eval": {"models", "out", "workers", "ray_address"},
    "analyze": {"students", "store", "runs", "datasets", "out"},
}
# Fields naming files from outside the experiment, whose content is part of a stage's digest (what
# the experiment writes itself is covered by the digests of the stages that write it).
INPUT_FILES = {"generate": ("questions",), "eval": ("data",)}
# Fields that do not change a stage's result: editing them does not redo the stage.
OPERATIONAL = {"progress", "workers", "ray_address", "threads", "disable_tqdm"}


@dataclass
class ExperimentConfig:
    teacher: str
    students: list[str]
    questions: str
    arms: list[dict]
    out: str = "experiment"
    seeds: int = 1
    rounds: int = 1
    cross_train: bool = False
    workers: int = 1
    ray_address: str | None = None
    sections: dict[str, dict] = field(default_factory=dict)


@dataclass
class Stage:
    """One step: `kind` runs `config`; its stamp is OUT/stages/<name>.json; `after` names the stages
    whose results it consumes (their digests are part of its own)."""

    name: str
    kind: str
    config: Any
    spec: dict  # what the stage was asked to do (its digest is taken over this, not the dataclass)
    after: list[str] = field(default_factory=list)


@dataclass
class Plan:
    config: ExperimentConfig
    stages: list[Stage]
    trace_sets: dict[str, dict]  # label -> arm, kind, student, round, swept (option, value), rule, threshold
    models: dict[str, dict]  # model key -> path, arm label (None for a base student), seed, student

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read and check an experiment YAML (structure only; `plan` checks every stage's values)."""
    data = read_mapping(path, "experiment config")
    where = f"experiment config {str(path)!r}"
    if "student" in data:  # one student may be given as `student:`
        data["students"] = [data.pop("student"), *data.get("students", [])]
    top = {f.name for f in dataclasses.fields(ExperimentConfig)} - {"sections"}
    unknown = sorted(set(data) - top - set(SECTIONS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; known keys are {sorted(top | set(SECTIONS))}")
    for key in ("teacher", "students", "questions", "arms"):
        if not data.get(key):
            raise UserError(f"{where}: {key!r} is required")
    if isinstance(data["students"], str):
        data["students"] = [data["students"]]
    sections = {name: data.pop(name) or {} for name in list(data) if name in SECTIONS}
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise UserError(f"{where}: section {name!r} must be a mapping of option: value")
    config = ExperimentConfig(**data, sections=sections)
    _check_top(config, where)
    return config


def _check_top(config: ExperimentConfig, where: str) -> None:
    checks = [
        (isinstance(config.arms, list) and all(isinstance(a, dict) for a in config.arms), "arms", "a list of mappings"),
        (isinstance(config.seeds, int) and config.seeds >= 1, "seeds", "an integer >= 1"),
        (isinstance(config.rounds, int) and config.rounds >= 1, "rounds", "an integer >= 1"),
        (isinstance(config.workers, int) and config.workers >= 1, "workers", "an integer >= 1"),
        (isinstance(config.cross_train, bool), "cross_train", "true or false"),
        (all(isinstance(s, str) for s in config.students), "students", "model paths or hub ids"),
    ]  # fmt: skip
    for ok, key, expected in checks:
        if not ok:
            raise UserError(f"{where}: {key!r} is {getattr(config, key)!r}; expected {expected}")


def expand_arms(arms: list[dict]) -> list[dict]:
    """Each arm as {name, kind, options}; a list value of a scalar generate option is a sweep: one arm
    per value, named ``name@field=value``."""
    lists = {f.name for f in dataclasses.fields(GenerateConfig) if "list" in str(f.type)}
    known = {f.name for f in dataclasses.fields(GenerateConfig)}
    out, names = [], set()
    for i, arm in enumerate(arms):
        arm = dict(arm)
        kind = arm.pop("kind", None)
        name = str(arm.pop("name", kind))
        where = f"arm {i + 1} ({name!r})"
        if kind not in KINDS:
            raise UserError(f"{where}: kind {kind!r} is unknown; expected one of {sorted(KINDS)}")
        for key in arm:
            if key not in known or key in OWNED["generate"]:
                raise UserError(f"{where}: {key!r} is not a generate option an arm may set")
            if key in KINDS[kind][1]:
                raise UserError(f"{where}: a {kind!r} arm fixes {key!r} ({KINDS[kind][0]}); drop it")
        swept = [k for k, v in arm.items() if isinstance(v, list) and k not in lists]
        if len(swept) > 1:
            raise UserError(f"{where}: sweeps {swept}; an arm sweeps one option (make one arm per sweep)")
        values = arm[swept[0]] if swept else [None]
        for value in values:
            options = arm | ({swept[0]: value} if swept else {})
            label = f"{name}@{swept[0]}={value}" if swept else name
            if label in names:
                raise UserError(f"{where}: another arm is already named {label!r}")
            names.add(label)
            out.append(
                dict(name=label, kind=kind, options=options, swept=(swept[0], value) if swept else None)
            )
    return out


def build(cls, values: dict, where: str, presets: dict | None = None):
    """cls(**values), with a preset's settings under the given ones; errors name `where`."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (not an option of this stage)")
    if presets is not None and values.get("preset"):
        if values["preset"] not in presets:
            raise UserError(
                f"{where}: preset {values['preset']!r} is unknown; expected one of {sorted(presets)}"
            )
        values = presets[values["preset"]] | values
    try:
        return cls(**values)
    except (UserError, ValueError, TypeError) as err:
        raise UserError(f"{where}: {err}") from None


def plan(config: ExperimentConfig) -> Plan:
    """Every stage of the experiment, in the order they run; validates every stage's config."""
    out, sections = Path(config.out), {k: dict(config.sections.get(k, {})) for k in SECTIONS}
    for name, section in sections.items():
        owned = sorted(set(section) & OWNED[name])
        if owned:
            raise UserError(f"section {name!r}: {owned[0]!r} is set by the experiment itself; remove it")
    arms = expand_arms(config.arms)
    tags = [_tag(s) for s in config.students]
    if len(set(tags)) < len(tags):
        raise UserError(f"students {config.students} have the same folder names; give each a distinct name")
    stages: list[Stage] = []
    trace_sets, models = {}, {}
    store = str(out / "traces.sqlite")
    for student, tag in zip(config.students, tags, strict=True):
        models[tag] = dict(path=student, arm=None, seed=None, student=tag, round=0)
    for arm in arms:
        rounds = config.rounds if arm["kind"] != "teacher" else 1  # the teacher's traces do not change
        for student, tag in zip(config.students, tags, strict=True):
            # each seed's starting model, and the stage that trains it (None: a base student)
            start = {seed: (student, None) for seed in range(config.seeds)}
            for rnd in range(1, rounds + 1):
                label = arm["name"] + (f"~{tag}" if len(tags) > 1 else "") + (f".r{rnd}" if rnd > 1 else "")
                trace_sets[label] = dict(
                    arm=arm["name"], kind=arm["kind"], student=tag, round=rnd, swept=arm["swept"]
                )
                # round 2 on: the round before's fine-tuned student (seed 0) writes and accepts
                generator, made_by = start[0]
                stages += _trace_stages(
                    config, sections, arm, label, generator, store, [made_by] if made_by else []
                )
                made = stages[-3].config  # the generate config: the rule and value this arm ran with
                trace_sets[label] |= dict(rule=made.rule, threshold=made.threshold)
                targets = [(tag, start)]
                if config.cross_train and rnd == 1 and arm["kind"] == "rsd":
                    others = [(t, p) for p, t in zip(config.students, tags, strict=True) if t != tag]
                    targets += [(t, {seed: (p, None) for seed in range(config.seeds)}) for t, p in others]
                trained = {}
                for target, begin in targets:
                    for seed in range(config.seeds):
                        key = f"{label}-seed{seed}" if target == tag else f"{label}>{target}-seed{seed}"
                        path = str(out / "models" / key)
                        models[key] = dict(path=path, arm=label, seed=seed, student=target, round=rnd)
                        model, made_by = begin[seed]
                        stages.append(_train_stage(sections, label, key, model, made_by, path, seed, out))
                        if target == tag:
                            trained[seed] = (path, f"train/{key}")
                start = trained
    for key, info in models.items():
        after = [] if info["arm"] is None else [f"train/{key}"]
        spec = sections["eval"] | dict(models=[info["path"]], out=str(out / "eval" / key))
        spec |= dict(workers=config.workers, ray_address=config.ray_address)
        stages.append(Stage(f"eval/{key}", "eval", build(EvalConfig, spec, "section 'eval'"), spec, after))
    spec = sections["analyze"] | dict(
        students=list(config.students), store=store, runs=list(trace_sets), out=str(out / "analysis")
    )
    after = [f"select/{label}" for label in trace_sets]
    stages.append(Stage("analyze", "analyze", build(AnalyzeConfig, spec, "section 'analyze'"), spec, after))
    stages.append(Stage("report", "report", None, {}, [s.name for s in stages]))
    return Plan(config, stages, trace_sets, models)


def _trace_stages(config, sections, arm, label, student, store, after) -> list[Stage]:
    gen = sections["generate"] | arm["options"] | KINDS[arm["kind"]][1]
    gen |= dict(
        teacher=config.teacher, student=student, questions=config.questions, store=store, run=label,
        workers=config.workers, ray_address=config.ray_address,
    )  # fmt: skip
    where = f"arm {arm['name']!r} (section 'generate')"
    sel = sections["select"] | dict(store=store, run=label)
    if arm["kind"] == "self":  # every token of a self trace is the student's own: a fallback by construction
        sel["max_fallback_rate"] = 1.0
    exp = sections["export"] | dict(
        store=store, run=label, out=str(Path(config.out) / "data" / f"{label}.jsonl")
    )
    exp["overwrite"] = True
    return [
        Stage(f"generate/{label}", "generate", build(GenerateConfig, gen, where, PRESETS), gen, after),
        Stage(f"select/{label}", "select", build(SelectConfig, sel, "section 'select'"), sel, [f"generate/{label}"]),
        Stage(f"export/{label}", "export", build(ExportConfig, exp, "section 'export'"), exp, [f"select/{label}"]),
    ]  # fmt: skip


def _train_stage(sections, label, key, model, made_by, path, seed, out) -> Stage:
    spec = sections["train"] | dict(
        model=model, dataset=str(out / "data" / f"{label}.jsonl"), output_dir=path, seed=seed
    )
    after = [f"export/{label}", *([made_by] if made_by else [])]
    return Stage(f"train/{key}", "train", build(TrainConfig, spec, "section 'train'"), spec, after)


def _tag(student: str) -> str:
    return re.sub(r"[^\w.-]+", "_", Path(student.rstrip("/")).name) or "student"


def digest(stage: Stage, upstream: dict[str, str]) -> str:
    """What the stage is asked to do and what it consumes: its spec (operational fields left out),
    the content of every local file it names (a question set edited in place), and the digests of
    the stages it runs after."""
    spec = {k: v for k, v in stage.spec.items() if k not in OPERATIONAL}
    named = _paths([spec.get(key) for key in INPUT_FILES.get(stage.kind, ())])
    files = {p: _file_digest(p) for p in named if Path(p).is_file()}
    payload = [stage.kind, spec, files, [upstream[a] for a in stage.after]]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _paths(values) -> list[str]:
    out = []
    for v in values:
        if isinstance(v, str):
            out += [v, *v.split("=", 1)[1:]]  # eval's data entries are NAME=PATH
        elif isinstance(v, list):
            out += _paths(v)
    return out


def _file_digest(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()
