"""The layering stays true: each layer imports only layers below it, stages never import each other,
the math imports only torch, and every SQL statement lives in the store."""

import ast
import re
from pathlib import Path

import pytest

import ownwords

SRC = Path(__file__).parents[1] / "src" / "ownwords"
# From the bottom; a module may import its own sub-package's modules and anything ranked lower.
# Units of one rank never import each other: decoding and data are apart (the store and the
# questions know nothing of the engine, the engine nothing of stores and question files).
RANK = {
    "errors": 0,
    "config": 1,
    "files": 1,
    "options": 1,
    "rsd": 2,
    "models": 3,
    "decoding": 4,
    "data": 4,
    "render": 5,
    "stages": 6,
    "experiment": 7,
    "demo": 8,
    "cli": 9,
    "__init__": 9,
}
MODULES = sorted(p for p in SRC.rglob("*.py"))


def unit(module: str) -> str:
    """ownwords.decoding.engine -> decoding; ownwords.cli -> cli."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[str]:
    """Every module `path` imports, anywhere in it (lazy imports in functions included), absolute."""
    here = ["ownwords", *path.relative_to(SRC).with_suffix("").parts]
    package = here[:-1] if path.name != "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.append(".".join(base + ([node.module] if node.module else [])))
            else:
                found.append(node.module)
    return found


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(SRC)) for p in MODULES])
def test_each_module_imports_only_lower_layers(path):
    me = ".".join(["ownwords", *path.relative_to(SRC).with_suffix("").parts]).removesuffix(".__init__")
    mine = unit(me) if me != "ownwords" else "__init__"
    for target in imports(path):
        if not target.startswith("ownwords.") or target == "ownwords":
            continue
        other = unit(target)
        assert other in RANK, f"{me} imports {target}, which is in no layer"
        if other == mine:  # a stage imports its own config module (stages/x_config.py) only; configs build on configs
            own = target in (me, f"{me}_config") or (me.endswith("_config") and target.endswith("_config"))
            assert mine != "stages" or own, f"{me} imports its sibling stage {target}"
            continue
        assert RANK[other] < RANK[mine], f"{me} ({mine}) imports {target} ({other}), a layer at or above it"


def test_units_of_one_rank_are_apart():
    """The ranks themselves say decoding and data may not import each other."""
    assert RANK["decoding"] == RANK["data"] and RANK["models"] < RANK["decoding"]


@pytest.mark.parametrize("path", sorted((SRC / "rsd").glob("*.py")), ids=lambda p: p.name)
def test_the_math_imports_only_torch(path):
    third_party = {t.split(".")[0] for t in imports(path) if not t.startswith(("ownwords", "__future__"))}
    stdlib = {"math", "dataclasses", "typing", "collections"}
    assert third_party - stdlib <= {"torch"}, third_party


SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|CREATE\s+TABLE|DELETE\s+FROM|UPDATE\s+\w+\s+SET|PRAGMA)\b"
)


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(SRC)) for p in MODULES])
def test_sql_lives_only_in_the_store(path):
    if path == SRC / "data" / "store.py":
        return
    assert not SQL.search(path.read_text()), f"SQL in {path.relative_to(SRC)}"


def test_the_public_api_names_every_stage():
    for name in ("generate", "select", "export", "train", "evaluate", "analyze"):
        assert callable(getattr(ownwords, name))
        assert getattr(ownwords, name.capitalize() + "Config" if name != "evaluate" else "EvalConfig")
    with pytest.raises(AttributeError):
        ownwords.no_such_thing  # noqa: B018


def test_stage_results_read_as_the_dicts_they_replace():
    """Every stage result is a typed Result that still compares, indexes and dumps like its JSON."""
    from ownwords.config import Result
    from ownwords.experiment.report import ReportResult
    from ownwords.stages.analyze_config import AnalyzeResult
    from ownwords.stages.evaluate_config import ModelEval
    from ownwords.stages.export_config import ExportResult
    from ownwords.stages.generate_config import GenerateResult
    from ownwords.stages.select_config import SelectResult
    from ownwords.stages.train_config import TrainResult

    for cls in (GenerateResult, SelectResult, ExportResult, TrainResult, ModelEval, AnalyzeResult, ReportResult):
        assert cls.__eq__ is Result.__eq__, f"{cls.__name__} is a @dataclass without eq=False"
    result = ExportResult(rows=3, path="d.jsonl")
    assert result == {"rows": 3, "path": "d.jsonl"} and result["rows"] == 3 and dict(result.items()) == result.to_json()
    assert ExportResult.from_json({"rows": 3, "path": "d.jsonl", "later": 1}) == result
