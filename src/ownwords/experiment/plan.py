"""An experiment from one YAML: its arms, the trace sets and models they make, and the stages that
make them (nothing runs here).

The YAML names a teacher, one or more students, a question set and a list of arms; each stage's
section is that stage's own config (the same field names as its command). `expand` turns the arms
into typed records -- a `TraceSet` per arm, student and round, a `ModelEntry` per base or fine-tuned
student -- and `plan` turns those into stages. Every stage config is validated here, so a bad key or
value is an error naming it before any model loads.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import build_config, read_mapping
from ..errors import UserError
from ..files import file_sha256
from ..options import marked
from ..stages.analyze_config import AnalyzeConfig
from ..stages.evaluate_config import EvalConfig
from ..stages.export_config import ExportConfig
from ..stages.generate_config import PRESETS, GenerateConfig
from ..stages.select_config import SelectConfig
from ..stages.train_config import TrainConfig
from .names import MAX_SEEDS_ROUNDS, MAX_SWEEP, check_name, check_plan_size, readable_tag, value_name

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
# Fields that are models (they enter a digest by their content fingerprint, or, when the experiment
# makes them, by the digest of the stage that does), input files (by their bytes) and output places
# (by their place inside the experiment folder): never by the path string, so another path to the
# same folder, or a moved or copied folder, changes no digest.
MODELS = {"generate": ("teacher", "student"), "train": ("model",), "eval": ("models",), "analyze": ("students",)}
FILES = {"generate": ("questions",), "train": ("dataset",), "analyze": ("datasets",)}
PLACES = {"generate": ("store",), "select": ("store",), "export": ("store", "out"), "train": ("output_dir",),
          "eval": ("out",), "analyze": ("store", "out")}  # fmt: skip
# Eval's data enters its digest by the files the benchmarks read, not by how they were named.
BY_FILES = {"eval": {"data", "data_dir"}}


@dataclass
class ExperimentConfig:
    teacher: str
    students: list[str]
    questions: str
    arms: list[dict]
    out: str = "experiment"
    name: str | None = None  # the report's title (default: the YAML file's name)
    seeds: int = 1
    rounds: int = 1
    cross_train: bool = False
    workers: int = 1
    ray_address: str | None = None
    sections: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Arm:
    name: str  # after sweep expansion: "rsd", "sweep@threshold=0.03"
    kind: str  # teacher | rsd | self
    options: dict  # generate options of this arm
    swept: tuple[str, Any] | None = None  # (option, value) for an arm of a sweep


@dataclass(frozen=True)
class TraceSet:
    """Traces made one way: an arm's, for one student (its tokenizer writes the token ids), in one round."""

    label: str  # "rsd", "rsd~student", "rsd.r2"; the store's run and the exported file's name
    arm: Arm
    student: str  # tag of the student
    round: int
    acceptor: str  # key of the model that writes and accepts the traces: the base student in round 1,
    #               the round before's seed-0 model after it


@dataclass(frozen=True)
class ModelEntry:
    """A base student, or a student fine-tuned on one trace set."""

    key: str  # "student", "rsd-seed0", "rsd>other-seed0" (trained into another student)
    path: str
    student: str  # tag of the student it is a version of
    trace_set: str | None = None  # what it was fine-tuned on (None: a base student)
    seed: int | None = None
    round: int = 0
    start: str | None = None  # key of the model it was fine-tuned from
    cross: bool = False  # fine-tuned on another student's RSD traces


@dataclass
class Stage:
    """One step: `kind` runs `config` (built on first use); its stamp is OUT/stages/<name>.json.
    `after`: the stages whose results it consumes; their digests are part of its own."""

    name: str
    kind: str
    spec: dict  # the config's fields as the experiment sets them
    cls: type | None  # the config's class (its fields' marks say which are operational)
    build: Callable[[], Any] = field(repr=False)
    resolved: Callable[[], dict] = field(repr=False)  # every field of the config that runs
    after: list[str] = field(default_factory=list)

    @functools.cached_property
    def config(self):
        return self.build()


@dataclass
class Plan:
    config: ExperimentConfig
    stages: list[Stage]
    trace_sets: dict[str, TraceSet]
    models: dict[str, ModelEntry]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    @property
    def out(self) -> Path:
        return Path(self.config.out)


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
    data.setdefault("name", Path(path).stem)
    config = ExperimentConfig(**data, sections=sections)
    _check_top(config, where)
    return config


def _check_top(config: ExperimentConfig, where: str) -> None:
    def whole(x, low, high):  # a bool is an int in Python; `seeds: true` is not a number of seeds
        return isinstance(x, int) and not isinstance(x, bool) and low <= x <= high

    checks = [
        (isinstance(config.arms, list) and all(isinstance(a, dict) for a in config.arms), "arms", "a list of mappings"),
        (whole(config.seeds, 1, MAX_SEEDS_ROUNDS), "seeds", f"an integer in [1, {MAX_SEEDS_ROUNDS}]"),
        (whole(config.rounds, 1, MAX_SEEDS_ROUNDS), "rounds", f"an integer in [1, {MAX_SEEDS_ROUNDS}]"),
        (whole(config.workers, 1, 10_000), "workers", "an integer >= 1"),
        (isinstance(config.cross_train, bool), "cross_train", "true or false"),
        (all(isinstance(s, str) and s for s in config.students), "students", "model paths or hub ids"),
        (all(isinstance(getattr(config, k), str) for k in ("teacher", "questions", "out")), "teacher",
         "teacher, questions and out as strings"),
        (config.name is None or isinstance(config.name, str), "name", "a string"),
    ]  # fmt: skip
    for ok, key, expected in checks:
        if not ok:
            raise UserError(f"{where}: {key!r} is {getattr(config, key)!r}; expected {expected}")


def expand_arms(arms: list[dict]) -> list[Arm]:
    """Each arm as an `Arm`; a list value of a scalar generate option is a sweep: one arm per value,
    named ``name@option=value``. Names are checked (they become file names) and must be unique."""
    lists = {f.name for f in dataclasses.fields(GenerateConfig) if "list" in str(f.type)}
    known = {f.name for f in dataclasses.fields(GenerateConfig)}
    out: list[Arm] = []
    for i, arm in enumerate(arms):
        arm = dict(arm)
        kind = arm.pop("kind", None)
        name = arm.pop("name", kind)
        where = f"arm {i + 1} ({name!r})"
        if kind not in KINDS:
            raise UserError(f"{where}: kind {kind!r} is unknown; expected one of {sorted(KINDS)}")
        check_name(name, f"{where}: name")
        for key in arm:
            if key not in known or key in OWNED["generate"]:
                raise UserError(f"{where}: {key!r} is not a generate option an arm may set")
            if key in KINDS[kind][1]:
                raise UserError(f"{where}: a {kind!r} arm fixes {key!r} ({KINDS[kind][0]}); drop it")
        swept = [k for k, v in arm.items() if isinstance(v, list) and k not in lists]
        if len(swept) > 1:
            raise UserError(f"{where}: sweeps {swept}; an arm sweeps one option (make one arm per sweep)")
        if swept and not 1 <= len(arm[swept[0]]) <= MAX_SWEEP:
            raise UserError(f"{where}: the sweep over {swept[0]!r} has {len(arm[swept[0]])} values; give 1 to {MAX_SWEEP}")
        for position, value in enumerate(arm[swept[0]] if swept else [None], 1):
            options = arm | ({swept[0]: value} if swept else {})
            label = check_name(f"{name}@{swept[0]}={value_name(value, position)}" if swept else name, where)
            out.append(Arm(label, kind, options, (swept[0], value) if swept else None))
    return out


def expand(config: ExperimentConfig) -> tuple[list[TraceSet], dict[str, ModelEntry]]:
    """The trace sets and models an experiment makes (pure: no file is read).

    A teacher arm's traces do not depend on the student: it is generated once (with the first
    student's tokenizer) and trained into every student, and it does not iterate over rounds. Round r
    >= 2 of an RSD or self arm is written and accepted by the round before's seed-0 model, and each
    seed trains from its own round-before model. `cross_train` also trains each student on the other
    students' round-1 RSD traces."""
    out, tags = Path(config.out), [readable_tag(s) for s in config.students]
    if len(set(tags)) < len(tags):
        raise UserError(f"students {config.students} have the same folder names; give each a distinct name")
    models = {
        tag: ModelEntry(tag, path, tag) for tag, path in zip(tags, config.students, strict=True)
    }  # fmt: skip
    sets: list[TraceSet] = []

    def train(trace_set: TraceSet, target: str, seed: int, start: str, cross: bool = False) -> str:
        into = "" if target == trace_set.student else f"-into-{target}"
        key = f"{trace_set.label}{into}-seed{seed}"
        if key in models:
            raise UserError(f"two models would be named {key!r}; rename an arm or a student's folder")
        models[key] = ModelEntry(key, str(out / "models" / key), target, trace_set.label, seed, trace_set.round,
                                 start, cross)  # fmt: skip
        return key

    def add(trace_set: TraceSet) -> TraceSet:
        """Labels become runs and file names: one each (an arm named `rsd.r2` would be round 2 of
        `rsd`, one named `x@threshold=0.1` a value of the sweep `x`)."""
        if any(s.label == trace_set.label for s in sets):
            raise UserError(
                f"two trace sets would be named {trace_set.label!r} (an arm's name is also another arm's round or "
                "sweep value); rename one of the arms"
            )
        sets.append(trace_set)
        return trace_set

    seeds = range(config.seeds)
    for arm in expand_arms(config.arms):
        if arm.kind == "teacher":
            add(TraceSet(arm.name, arm, tags[0], 1, tags[0]))
            for tag in tags:
                for seed in seeds:
                    train(sets[-1], tag, seed, tag)
            continue
        for tag in tags:
            start = dict.fromkeys(seeds, tag)  # each seed's starting model
            for rnd in range(1, config.rounds + 1):
                label = arm.name + (f"~{tag}" if len(tags) > 1 else "") + (f".r{rnd}" if rnd > 1 else "")
                add(TraceSet(label, arm, tag, rnd, start[0]))
                own = {seed: train(sets[-1], tag, seed, start[seed]) for seed in seeds}
                if config.cross_train and rnd == 1 and arm.kind == "rsd":
                    for other in (t for t in tags if t != tag):
                        for seed in seeds:
                            train(sets[-1], other, seed, other, cross=True)
                start = own
    return sets, models


def plan(config: ExperimentConfig) -> Plan:
    """Every stage of the experiment, in the order they run; validates every stage's config."""
    sections = {k: dict(config.sections.get(k, {})) for k in SECTIONS}
    for name, section in sections.items():
        owned = sorted(set(section) & OWNED[name])
        if owned:
            raise UserError(f"section {name!r}: {owned[0]!r} is set by the experiment itself; remove it")
    sets, models = expand(config)
    check_plan_size(len(sets), len(models))
    out = Path(config.out)
    store = str(out / "traces.sqlite")
    train_config = _train_builder(sections["train"])
    stages: list[Stage] = []
    for trace_set in sets:
        stages += _trace_stages(config, sections, trace_set, models, store)
        for entry in models.values():
            if entry.trace_set == trace_set.label:
                stages.append(_train_stage(train_config, entry, models, trace_set, out))
    for entry in models.values():
        spec = sections["eval"] | dict(models=[entry.path], out=str(out / "eval" / entry.key),
                                       workers=config.workers, ray_address=config.ray_address)  # fmt: skip
        after = [] if entry.trace_set is None else [f"train/{entry.key}"]
        stages.append(_stage(f"eval/{entry.key}", "eval", EvalConfig, spec, "section 'eval'", after))
    scorers = [models[k].path for k in dict.fromkeys([*(m for m in models if models[m].trace_set is None),
                                                      *(s.acceptor for s in sets)])]  # fmt: skip
    spec = sections["analyze"] | dict(students=scorers, store=store, runs=[s.label for s in sets], out=str(out / "analysis"))
    after = [f"select/{s.label}" for s in sets] + [f"train/{s.acceptor}" for s in sets if s.round > 1]
    stages.append(_stage("analyze", "analyze", AnalyzeConfig, spec, "section 'analyze'", after))
    stages.append(Stage("report", "report", {}, None, lambda: None, dict, [s.name for s in stages]))
    return Plan(config, stages, {s.label: s for s in sets}, models)


def _stage(name, kind, cls, spec, where, after, presets=None) -> Stage:
    """A stage whose config is built (and so validated) now."""
    config = build_config(cls, spec, where, presets)
    return Stage(name, kind, spec, cls, lambda: config, lambda: dataclasses.asdict(config), after)


def _trace_stages(config, sections, trace_set: TraceSet, models, store) -> list[Stage]:
    arm, label = trace_set.arm, trace_set.label
    acceptor = models[trace_set.acceptor]
    gen = sections["generate"] | arm.options | KINDS[arm.kind][1]
    gen |= dict(
        teacher=config.teacher, student=acceptor.path, questions=config.questions, store=store, run=label,
        workers=config.workers, ray_address=config.ray_address,
    )  # fmt: skip
    sel = sections["select"] | dict(store=store, run=label)
    if arm.kind == "self":  # every token of a self trace is the student's own: a fallback by construction
        sel["max_fallback_rate"] = 1.0
    exp = sections["export"] | dict(store=store, run=label, out=str(Path(config.out) / "data" / f"{label}.jsonl"))
    exp["overwrite"] = True
    made_by = [] if acceptor.trace_set is None else [f"train/{acceptor.key}"]
    return [
        _stage(f"generate/{label}", "generate", GenerateConfig, gen, f"arm {arm.name!r} (section 'generate')",
               made_by, PRESETS),
        _stage(f"select/{label}", "select", SelectConfig, sel, "section 'select'", [f"generate/{label}"]),
        _stage(f"export/{label}", "export", ExportConfig, exp, "section 'export'", [f"select/{label}"]),
    ]  # fmt: skip


def _train_builder(section: dict) -> Callable[[dict], tuple[Callable, Callable]]:
    """One train config built (and validated) now for the whole section; each training's own config
    is built when it runs, its resolved fields taken from that one (only the wiring differs)."""
    wiring = dict(model="<model>", dataset="<dataset>", output_dir="<output>", seed=0)
    resolved = dataclasses.asdict(build_config(TrainConfig, section | wiring, "section 'train'"))

    def for_stage(own: dict):
        spec = section | own
        return spec, (lambda: build_config(TrainConfig, spec, "section 'train'")), (lambda: resolved | own)

    return for_stage


def _train_stage(train_config, entry: ModelEntry, models, trace_set: TraceSet, out: Path) -> Stage:
    start = models[entry.start]
    spec, build, resolved = train_config(
        dict(model=start.path, dataset=str(out / "data" / f"{trace_set.label}.jsonl"), output_dir=entry.path,
             seed=entry.seed)
    )  # fmt: skip
    # the dataset enters by its bytes, not by the export that wrote it: an export giving the same file
    # (an edited question whose traces were not chosen) retrains nothing
    after = [] if start.trace_set is None else [f"train/{start.key}"]
    return Stage(f"train/{entry.key}", "train", spec, TrainConfig, build, resolved, after)


# -- digests ------------------------------------------------------------------------------------


def digest(stage: Stage, upstream: dict[str, str], out: str | Path) -> str:
    """What the stage is asked to do and what it consumes: its resolved config (operational fields
    left out) with models by content fingerprint, input files by their bytes and places inside the
    experiment folder by their place there; the digests of the stages it runs after; and the version
    of ownwords (a release that changes a default changes what a stage does)."""
    from .. import __version__

    skip = (marked(stage.cls, "operational") if stage.cls else set()) | BY_FILES.get(stage.kind, set())
    config = {k: v for k, v in stage.resolved().items() if k not in skip}
    canonical = _canonical(stage.kind, config, Path(out).expanduser().resolve())
    if stage.kind == "eval":  # the files the benchmarks are read from
        canonical["data_files"] = {b: _file(p) for b, p in sorted(stage.config.data_paths().items())}
    payload = [stage.kind, __version__, canonical, [upstream[a] for a in stage.after]]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _canonical(kind: str, config: dict, root: Path) -> dict:
    def each(value, one):
        return [one(v) for v in value] if isinstance(value, list) else one(value)

    def place(value):
        if not isinstance(value, str):
            return value
        path = Path(value).expanduser().resolve()
        return f"<out>/{path.relative_to(root).as_posix()}" if path == root or root in path.parents else value

    def model(value):
        placed = place(value)
        if placed != value or not isinstance(value, str):  # made by the experiment: by its stage's digest
            return placed
        from ..models.loading import model_fingerprint

        return f"model:{model_fingerprint(value)}"

    out = dict(config)
    for key in PLACES.get(kind, ()):
        out[key] = each(config.get(key), place)
    for key in MODELS.get(kind, ()):
        out[key] = each(config.get(key), model)
    for key in FILES.get(kind, ()):
        out[key] = each(config.get(key), _file)
    return out


def _file(path):
    if not isinstance(path, str):
        return path
    return f"file:{file_sha256(path)}" if Path(path).is_file() else f"missing:{Path(path).name}"
