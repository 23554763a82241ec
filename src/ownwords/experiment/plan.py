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
    "mask": ("the teacher's traces, trained with the loss off on the tokens the student scores under mask_under",
             dict(rule="threshold", threshold=0.0)),
    "onpolicy": ("on-policy distillation (TRL's DistillationTrainer) from the base student or `from` an arm's", {}),
}  # fmt: skip
TEACHER_TRACES = ("teacher", "mask")  # generated once, trained into every student, no rounds
# An arm's own keys besides its generate options: which kinds take them.
ARM_KEYS = {"select": None, "mask_under": ("mask",), "from": ("onpolicy",), "match": ("self",)}
MATCH_CAP = 16  # a compute-matched self arm may draw up to this many times the section's samples
SECTIONS = {
    "generate": GenerateConfig,
    "select": SelectConfig,
    "export": ExportConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "analyze": AnalyzeConfig,
    "distill": None,  # DistillConfig: TRL's, so imported when an onpolicy arm needs it
}
# Fields the experiment sets itself (wiring stages together); a section may not set them.
OWNED = {
    "generate": {"teacher", "student", "questions", "store", "run", "workers", "ray_address"},
    "select": {"store", "run"},
    "export": {"store", "run", "out", "overwrite"},
    "train": {"model", "dataset", "output_dir", "seed"},
    "eval": {"models", "out", "workers", "ray_address"},
    "analyze": {"students", "store", "runs", "datasets", "out"},
    "distill": {"model", "teacher", "questions", "output_dir", "seed"},
}
# Fields that are models (they enter a digest by their content fingerprint, or, when the experiment
# makes them, by the digest of the stage that does), input files (by their bytes) and output places
# (by their place inside the experiment folder): never by the path string, so another path to the
# same folder, or a moved or copied folder, changes no digest.
MODELS = {"generate": ("teacher", "student"), "train": ("model",), "eval": ("models",), "analyze": ("students",),
          "distill": ("model", "teacher")}  # fmt: skip
FILES = {"generate": ("questions",), "train": ("dataset",), "analyze": ("datasets",), "distill": ("questions",),
         "split": ("questions",)}  # fmt: skip
PLACES = {"split": ("train", "dev"), "generate": ("store",), "select": ("store",), "export": ("store", "out"), "train": ("output_dir",),
          "eval": ("out",), "analyze": ("store", "out"), "distill": ("output_dir",)}  # fmt: skip
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
    dev_fraction: float | None = None  # of the questions held out as a dev split (a sweep's value is chosen there)
    dev_benchmark: str | None = None  # the benchmark whose format and grading the questions follow
    sections: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Arm:
    name: str  # after sweep expansion: "rsd", "sweep@threshold=0.03"
    kind: str  # teacher | rsd | self | mask | onpolicy
    options: dict  # generate options of this arm
    swept: tuple[str, Any] | None = None  # (option, value) for an arm of a sweep
    select: dict = field(default_factory=dict)  # select options of this arm (e.g. policy: least_surprising)
    mask_under: float | None = None  # mask: the p_th under which the student's tokens get no loss
    source: str | None = None  # onpolicy: the arm whose trained students it starts from (None: the base)
    match: str | None = None  # self: the RSD arm whose generated tokens it matches


@dataclass(frozen=True)
class TraceSet:
    """Traces made one way: an arm's, for one student (its tokenizer writes the token ids), in one round."""

    label: str  # "rsd", "rsd~student", "rsd.r2"; the store's run and the exported file's name
    arm: Arm
    student: str  # tag of the student
    round: int
    acceptor: str  # key of the model that writes and accepts the traces: the base student in round 1,
    #               the round before's seed-0 model after it
    match: str | None = None  # a compute-matched self set: the label of the RSD set whose tokens it matches


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
    arm: str | None = None  # the arm that made it (None: a base student)

    @property
    def maker(self) -> list[str]:
        """The stage that makes this model ([] for a base student)."""
        if self.arm is None:
            return []
        return [f"{'train' if self.trace_set is not None else 'distill'}/{self.key}"]


@dataclass(frozen=True)
class Choice:
    """A sweep whose value is chosen on the dev split, for one student and round: its arms' models are
    evaluated on dev only, and the chosen arm's on the test benchmarks."""

    name: str  # "sweep", "sweep~student", "sweep.r2": its report row and its stages' names
    option: str  # the swept generate option
    arms: dict  # arm name -> (value, {seed: model key}), in the sweep's order


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
    choices: dict[str, Choice] = field(default_factory=dict)

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
        (config.dev_fraction is None or (isinstance(config.dev_fraction, int | float)
         and not isinstance(config.dev_fraction, bool) and 0 < config.dev_fraction < 1), "dev_fraction",
         "a fraction in (0, 1) of the questions to hold out"),
        (config.dev_benchmark is None or isinstance(config.dev_benchmark, str), "dev_benchmark", "a benchmark name"),
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
        own = _arm_keys(arm, kind, where, [a.name.split("@")[0] for a in out])
        for key in arm:
            if key not in known or key in OWNED["generate"]:
                raise UserError(f"{where}: {key!r} is not a generate option an arm may set")
            if key in KINDS[kind][1]:
                raise UserError(f"{where}: a {kind!r} arm fixes {key!r} ({KINDS[kind][0]}); drop it")
            if kind == "onpolicy":
                raise UserError(f"{where}: an onpolicy arm generates no traces; its options go in section 'distill'")
        swept = [k for k, v in arm.items() if isinstance(v, list) and k not in lists]
        if len(swept) > 1:
            raise UserError(f"{where}: sweeps {swept}; an arm sweeps one option (make one arm per sweep)")
        if swept and not 1 <= len(arm[swept[0]]) <= MAX_SWEEP:
            raise UserError(f"{where}: the sweep over {swept[0]!r} has {len(arm[swept[0]])} values; give 1 to {MAX_SWEEP}")
        for position, value in enumerate(arm[swept[0]] if swept else [None], 1):
            options = arm | ({swept[0]: value} if swept else {})
            label = check_name(f"{name}@{swept[0]}={value_name(value, position)}" if swept else name, where)
            out.append(Arm(label, kind, options, (swept[0], value) if swept else None, **own))
    return out


def _arm_keys(arm: dict, kind: str, where: str, before: list[str]) -> dict:
    """Pop and check an arm's own keys (not generate options): select, mask_under, from, match."""
    for key, kinds in ARM_KEYS.items():
        if key in arm and kinds is not None and kind not in kinds:
            raise UserError(f"{where}: {key!r} is for {' and '.join(kinds)} arms, not {kind!r}")
    select = arm.pop("select", None) or {}
    if not isinstance(select, dict):
        raise UserError(f"{where}: 'select' must be a mapping of select options")
    wrong = sorted(set(select) - {f.name for f in dataclasses.fields(SelectConfig)} | (set(select) & OWNED["select"]))
    if wrong:
        raise UserError(f"{where}: select option {wrong[0]!r} is not one an arm may set")
    mask_under = arm.pop("mask_under", 0.01 if kind == "mask" else None)
    if mask_under is not None and not (isinstance(mask_under, int | float) and 0 < mask_under <= 1):
        raise UserError(f"{where}: mask_under is {mask_under!r}; expected a probability in (0, 1]")
    source, match = arm.pop("from", None), arm.pop("match", None)
    for key, value in (("from", source), ("match", match)):
        if value is not None and value not in before:
            raise UserError(f"{where}: {key} {value!r} names no arm listed before this one ({before or 'none'})")
    return dict(select=select, mask_under=mask_under, source=source, match=match)


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
                                 start, cross, trace_set.arm.name)  # fmt: skip
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
    made: dict[tuple[str, str], dict[int, str]] = {}  # (arm name, student tag) -> its last models by seed
    for arm in expand_arms(config.arms):
        if arm.kind in TEACHER_TRACES:
            add(TraceSet(arm.name, arm, tags[0], 1, tags[0]))
            for tag in tags:
                made[(arm.name, tag)] = {seed: train(sets[-1], tag, seed, tag) for seed in seeds}
            continue
        if arm.kind == "onpolicy":
            for tag in tags:
                start = made.get((arm.source, tag), dict.fromkeys(seeds, tag)) if arm.source else dict.fromkeys(seeds, tag)
                made[(arm.name, tag)] = {}
                for seed in seeds:
                    key = arm.name + (f"~{tag}" if len(tags) > 1 else "") + f"-seed{seed}"
                    if key in models:
                        raise UserError(f"two models would be named {key!r}; rename an arm or a student's folder")
                    models[key] = ModelEntry(key, str(out / "models" / key), tag, None, seed, 1, start[seed], arm=arm.name)
                    made[(arm.name, tag)][seed] = key
            continue
        for tag in tags:
            start = dict.fromkeys(seeds, tag)  # each seed's starting model
            for rnd in range(1, config.rounds + 1):
                label = arm.name + (f"~{tag}" if len(tags) > 1 else "") + (f".r{rnd}" if rnd > 1 else "")
                add(TraceSet(label, arm, tag, rnd, start[0], _matched(arm, tag, rnd, sets)))
                own = {seed: train(sets[-1], tag, seed, start[seed]) for seed in seeds}
                if config.cross_train and rnd == 1 and arm.kind == "rsd":
                    for other in (t for t in tags if t != tag):
                        for seed in seeds:
                            train(sets[-1], other, seed, other, cross=True)
                start = own
            made[(arm.name, tag)] = start
    return sets, models


def _matched(arm: Arm, tag: str, rnd: int, sets: list[TraceSet]) -> str | None:
    """The label of the RSD trace set a compute-matched self set matches (same student and round)."""
    if arm.match is None:
        return None
    found = [s for s in sets if s.arm.name == arm.match and s.student == tag and s.round == rnd]
    if not found or found[0].arm.kind != "rsd":
        raise UserError(f"arm {arm.name!r}: match {arm.match!r} must name an RSD arm (one value, not a sweep)")
    return found[0].label


def plan(config: ExperimentConfig) -> Plan:
    """Every stage of the experiment, in the order they run; validates every stage's config."""
    sections = {k: dict(config.sections.get(k, {})) for k in SECTIONS}
    for name, section in sections.items():
        owned = sorted(set(section) & OWNED[name])
        if owned:
            raise UserError(f"section {name!r}: {owned[0]!r} is set by the experiment itself; remove it")
    sets, models = expand(config)
    distilled = [e for e in models.values() if e.arm is not None and e.trace_set is None]
    if distilled:
        check_distillable(config)
    check_plan_size(len(sets), len(models))
    out = Path(config.out)
    store = str(out / "traces.sqlite")
    train_config = _train_builder(sections["train"])
    stages: list[Stage] = []
    questions = config.questions
    if config.dev_fraction is not None:  # generation and distillation see the training part only
        stages.append(_split_stage(config, sections["generate"]))
        questions = stages[0].spec["train"]
    for trace_set in sets:
        stages += _trace_stages(config, sections, trace_set, models, store, questions)
        for entry in models.values():
            if entry.trace_set == trace_set.label:
                stages.append(_train_stage(train_config, entry, models, trace_set, out))
    stages += [_distill_stage(config, sections["distill"], entry, models, questions) for entry in distilled]
    choices = _choices(sets, models) if config.dev_fraction is not None else {}
    if config.dev_fraction is not None and not choices:
        raise UserError("dev_fraction is set but no arm sweeps an option: the dev split chooses a sweep's value; "
                        "add a sweep (e.g. threshold: [0.01, 0.03]) or drop dev_fraction")
    on_dev = {key for c in choices.values() for _, seeds in c.arms.values() for key in seeds.values()}
    dev = _dev_eval(config, sections["eval"], stages[0].spec["dev"] if choices else None)
    for entry in models.values():
        spec = sections["eval"] | dict(models=[entry.path], out=str(out / "eval" / entry.key),
                                       workers=config.workers, ray_address=config.ray_address)  # fmt: skip
        if entry.key in on_dev:
            spec |= dev | dict(out=str(out / "eval-dev" / entry.key))
        name = f"{'dev' if entry.key in on_dev else 'eval'}/{entry.key}"
        stages.append(_stage(name, "eval", EvalConfig, spec, "section 'eval'", entry.maker))
    for choice in choices.values():
        stages += _choice_stages(config, sections["eval"], choice, models, dev["benchmarks"][0])
    scorers = [models[k].path for k in dict.fromkeys([*(m for m in models if models[m].arm is None),
                                                      *(s.acceptor for s in sets)])]  # fmt: skip
    spec = sections["analyze"] | dict(students=scorers, store=store, runs=[s.label for s in sets], out=str(out / "analysis"))
    after = [f"select/{s.label}" for s in sets] + [f"train/{s.acceptor}" for s in sets if s.round > 1]
    stages.append(_stage("analyze", "analyze", AnalyzeConfig, spec, "section 'analyze'", after))
    stages.append(Stage("report", "report", {}, None, lambda: None, dict, [s.name for s in stages]))
    return Plan(config, stages, {s.label: s for s in sets}, models, choices)


# -- the dev split ------------------------------------------------------------------------------


def _split_stage(config: ExperimentConfig, generate: dict) -> Stage:
    from .dev import SplitConfig

    data = Path(config.out) / "data"
    split = SplitConfig(config.questions, config.dev_fraction, str(data / "questions-train.jsonl"),
                        str(data / "questions-dev.jsonl"), generate.get("split", "train"))  # fmt: skip
    spec = dataclasses.asdict(split)
    return Stage("split", "split", spec, SplitConfig, lambda: split, lambda: spec, [])


def _choices(sets: list[TraceSet], models: dict[str, ModelEntry]) -> dict[str, Choice]:
    """Each sweep's models trained into their own student, grouped by student and round."""
    groups: dict[str, dict] = {}
    options: dict[str, str] = {}
    by_label = {s.label: s for s in sets}
    for entry in models.values():
        trace_set = by_label.get(entry.trace_set)
        if trace_set is None or trace_set.arm.swept is None or entry.cross:
            continue
        arm = trace_set.arm
        name = trace_set.label.replace(arm.name, arm.name.split("@")[0], 1)
        if name in by_label:
            raise UserError(f"the sweep {name!r} chosen on dev has the name of a trace set; rename one of the arms")
        options[name] = arm.swept[0]
        groups.setdefault(name, {}).setdefault(arm.name, (arm.swept[1], {}))[1][entry.seed] = entry.key
    return {name: Choice(name, options[name], arms) for name, arms in groups.items()}


def _dev_eval(config: ExperimentConfig, section: dict, dev_file: str | None) -> dict:
    """The eval options that point an evaluation at the dev split (as the `dev_benchmark`)."""
    if dev_file is None:
        return {}
    bench = config.dev_benchmark
    if bench is None:
        benches = build_config(EvalConfig, section | dict(models=["<model>"]), "section 'eval'").benchmarks
        if len(benches) != 1:
            raise UserError(
                f"dev_benchmark is required with several eval benchmarks ({benches}): name the one whose format "
                "and grading the training questions follow"
            )
        bench = benches[0]
    return dict(benchmarks=[bench], data=[f"{bench}={dev_file}"], data_dir=None)


def _choice_stages(config: ExperimentConfig, section: dict, choice: Choice, models, bench: str) -> list[Stage]:
    """choose/<sweep>: the value of best dev accuracy (given the dev evaluations only); then the chosen
    arm's models on the test benchmarks, their config read from the choice's stamp when they run."""
    from .dev import ChooseConfig

    out = Path(config.out)
    dev = {arm: [f"dev/{key}" for key in seeds.values()] for arm, (_, seeds) in choice.arms.items()}
    choose = ChooseConfig(choice.option, [v for v, _ in choice.arms.values()], list(choice.arms), dev, bench)
    spec = dataclasses.asdict(choose)
    stages = [Stage(f"choose/{choice.name}", "choose", spec, ChooseConfig, lambda: choose, lambda: spec,
                    [s for stages in dev.values() for s in stages])]  # fmt: skip
    seeds = next(iter(choice.arms.values()))[1]
    for seed in seeds:
        base = section | dict(out=str(out / "eval" / f"{choice.name}-chosen-seed{seed}"), workers=config.workers,
                              ray_address=config.ray_address)  # fmt: skip
        stages.append(_chosen_stage(f"eval/{choice.name}-chosen-seed{seed}", base, choice, seed, models, out))
    return stages


def _chosen_stage(name: str, spec: dict, choice: Choice, seed: int, models, out: Path) -> Stage:
    build_config(EvalConfig, spec | dict(models=["<chosen>"]), "section 'eval'")  # checked now

    def config():
        stamp = json.loads((out / "stages" / f"choose/{choice.name}.json").read_text())
        key = choice.arms[stamp["result"]["arm"]][1][seed]
        return build_config(EvalConfig, spec | dict(models=[models[key].path]), "section 'eval'")

    built = functools.cache(config)
    return Stage(name, "eval", spec, EvalConfig, built, lambda: dataclasses.asdict(built()), [f"choose/{choice.name}"])


def _stage(name, kind, cls, spec, where, after, presets=None) -> Stage:
    """A stage whose config is built (and so validated) now."""
    config = build_config(cls, spec, where, presets)
    return Stage(name, kind, spec, cls, lambda: config, lambda: dataclasses.asdict(config), after)


def _trace_stages(config, sections, trace_set: TraceSet, models, store, questions: str) -> list[Stage]:
    arm, label = trace_set.arm, trace_set.label
    acceptor = models[trace_set.acceptor]
    gen = sections["generate"] | arm.options | KINDS[arm.kind][1]
    gen |= dict(
        teacher=config.teacher, student=acceptor.path, questions=questions, store=store, run=label,
        workers=config.workers, ray_address=config.ray_address,
    )  # fmt: skip
    sel = sections["select"] | arm.select | dict(store=store, run=label)
    if arm.kind == "self":  # every token of a self trace is the student's own: a fallback by construction
        sel["max_fallback_rate"] = 1.0
    exp = sections["export"] | dict(store=store, run=label, out=str(Path(config.out) / "data" / f"{label}.jsonl"))
    exp["overwrite"] = True
    where = f"arm {arm.name!r} (section 'generate')"
    if trace_set.match:  # as many of the student's samples as make the RSD set's generated tokens
        gen["samples"] = gen.get("samples", GenerateConfig.samples) * MATCH_CAP
        rsd = f"generate/{trace_set.match}"
        generate = _matched_stage(f"generate/{label}", gen, where, [*acceptor.maker, rsd], Path(config.out), rsd)
    else:
        generate = _stage(f"generate/{label}", "generate", GenerateConfig, gen, where, acceptor.maker, PRESETS)
    return [
        generate,
        _stage(f"select/{label}", "select", SelectConfig, sel, "section 'select'", [f"generate/{label}"]),
        _stage(f"export/{label}", "export", ExportConfig, exp, "section 'export'", [f"select/{label}"]),
    ]  # fmt: skip


def _matched_stage(name: str, spec: dict, where: str, after: list[str], out: Path, rsd: str) -> Stage:
    """A compute-matched generate stage: its token budget is what the RSD stage `rsd` generated, read
    from that stage's stamp when this one runs (it runs after it). At plan time the budget is not known
    yet, so the rest of the config is validated with a budget of 1 token in its place."""
    build_config(GenerateConfig, spec | dict(token_budget=1), where, PRESETS)

    def config():
        stamp = json.loads((out / "stages" / f"{rsd}.json").read_text())
        return build_config(GenerateConfig, spec | dict(token_budget=max(1, stamp["result"]["tokens"])), where, PRESETS)

    built = functools.cache(config)
    return Stage(name, "generate", spec, GenerateConfig, built, lambda: dataclasses.asdict(built()), after)


def check_distillable(config: ExperimentConfig) -> None:
    """An onpolicy arm compares the teacher's logits with the student's token by token: refused now,
    before anything runs, unless every student shares the teacher's vocabulary."""
    from ..models.loading import load_tokenizer

    teacher = load_tokenizer(config.teacher)
    for student in config.students:
        if load_tokenizer(student).get_vocab() != teacher.get_vocab():
            raise UserError(
                f"an onpolicy arm needs teacher and student to share a vocabulary (on-policy distillation compares "
                f"their logits token by token): {config.teacher!r} and {student!r} do not; drop the onpolicy arm "
                "for this pair (RSD and the other arms work across vocabularies)"
            )


def _distill_stage(config: ExperimentConfig, section: dict, entry: ModelEntry, models, questions: str) -> Stage:
    from ..stages.distill_config import DistillConfig

    start = models[entry.start]
    spec = section | dict(model=start.path, teacher=config.teacher, questions=questions,
                          output_dir=entry.path, seed=entry.seed)  # fmt: skip
    return _stage(f"distill/{entry.key}", "distill", DistillConfig, spec, "section 'distill'", start.maker)


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
    own = dict(model=start.path, dataset=str(out / "data" / f"{trace_set.label}.jsonl"), output_dir=entry.path,
               seed=entry.seed)  # fmt: skip
    if trace_set.arm.mask_under is not None:
        own["mask_under"] = trace_set.arm.mask_under
    spec, build, resolved = train_config(own)
    # the dataset enters by its bytes, not by the export that wrote it: an export giving the same file
    # (an edited question whose traces were not chosen) retrains nothing
    return Stage(f"train/{entry.key}", "train", spec, TrainConfig, build, resolved, start.maker)


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
