"""Stage configs from YAML and the command line: defaults < preset < YAML file < flags.

Each stage has one dataclass (fields carry their help text; `__post_init__` validates). The parser is
transformers' `HfArgumentParser`, so every field is a flag (`--max-new-tokens` or `--max_new_tokens`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import enum
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import MissingInput, UserError

C = TypeVar("C")
MARKS = ("operational", "resumable")  # ownwords' own keys in a field's metadata (see options.py)
MAX_YAML_BYTES = 1 << 20  # a config of a megabyte is not a config


class _StrictLoader(yaml.SafeLoader):
    """safe_load without aliases (`*a` can make a few lines expand to gigabytes) or repeated keys
    (the second silently won)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases (*{event.anchor}) are not accepted in a config; write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
        if repeated:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {repeated[0]!r} is given more than once", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


def recipes() -> dict[str, Path]:
    """The recipes shipped in the package, by name (`generate_paper`, `experiment_paper`, `demo`...)."""
    from importlib.resources import files

    folder = Path(str(files("ownwords") / "recipes"))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def find_recipe(name_or_path: str | Path) -> Path:
    """A config file by its path, or a shipped recipe by its name (as torchtune finds its configs)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = recipes()
    name = path.name.removesuffix(".yaml")
    if name in shipped and path.parent in (Path("."), Path("recipes")):
        return shipped[name]
    raise MissingInput(
        f"config {str(name_or_path)!r}: no such file, and no shipped recipe of that name (they are: "
        f"{', '.join(shipped)})"
    )


def read_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file (or a shipped recipe's name) holding a mapping (an empty file is an empty one)."""
    if not Path(path).is_file() and Path(path).suffix in ("", ".yaml") and Path(path).name.removesuffix(".yaml") in recipes():
        path = find_recipe(path)
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{what} {str(path)!r} does not exist")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise UserError(f"{what} {str(path)!r} is {path.stat().st_size} bytes; a config is at most {MAX_YAML_BYTES}")
    try:
        data = yaml.load(path.read_text(), Loader=_StrictLoader) or {}  # noqa: S506 (a safe loader)
    except yaml.YAMLError as err:
        raise UserError(f"{what} {str(path)!r} is not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {str(path)!r}: expected a mapping of option: value")
    return data


def load_yaml(path: str | Path, cls: type) -> dict[str, Any]:
    """A YAML mapping whose keys must all be fields of `cls`, of the fields' types."""
    data = read_mapping(path)
    check_values(cls, data, f"config file {str(path)!r}")
    return data


def check_values(cls: type, values: dict, where: str) -> None:
    """Every key a field of `cls`, every value of its field's type (before construction, so that a
    TypeError raised inside a config is a bug, not a typo)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; known keys are {sorted(known)}")
    hints = _hints(cls)
    for key, value in values.items():
        hint = hints.get(key, Any)
        if not _fits(value, hint):
            raise UserError(f"{where}: {key} is {value!r}; expected {_describe(hint)}")


def with_preset(values: dict, presets: dict | None, where: str) -> dict:
    """`values` over the settings of the preset they name (the one merge of a preset, for the command
    line, config files and experiment sections alike)."""
    name = values.get("preset")
    if name is None:
        return values
    if not presets or name not in presets:
        raise UserError(f"{where}: preset {name!r} is unknown; expected one of {sorted(presets or {})}")
    return presets[name] | values


def build_config(cls: type[C], values: dict, where: str, presets: dict | None = None) -> C:
    """cls(**values), with a preset's settings under the given ones; a bad key, type or value is a
    UserError naming `where`."""
    values = with_preset(values, presets, where)
    check_values(cls, values, where)
    try:
        return cls(**values)
    except ValueError as err:  # UserError included; a TypeError here is a bug and keeps its traceback
        raise UserError(f"{where}: {err}") from None


def _hints(cls: type) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 -- a type we cannot resolve is not checked, never a failure
        return {}


def _fits(value, hint) -> bool:
    """Can a field typed `hint` take the YAML value? (Lenient where the configs convert: a number for
    a string, a scalar for a list; unknown types pass.)"""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str | int | float) and not isinstance(value, bool)
    if origin in (list, tuple):
        items = value if isinstance(value, list | tuple) else [value]
        return all(_fits(v, args[0] if args else Any) for v in items)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, str | hint)
    return True


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_describe(args[0]) if args else 'values'}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown where they say something: not for required options or `--no-...` switches."""

    def _get_help_string(self, action):
        if action.default is None or action.option_strings[0].startswith("--no"):
            return action.help
        return super()._get_help_string(action)


class OneLineErrors:
    """argparse, but a bad command line is one UserError line naming the flag (and the closest valid
    one), not a page of usage: mixed into every parser of the CLI."""

    def error(self, message: str):
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            raise UserError(unknown_flag(unknown.group(1), self))
        raise UserError(f"{message} (see {self.prog} --help)")


# Names other tools use for an option, and ours (the closest spelling would not find them).
SYNONYMS = {"--lr": "--learning-rate", "--epochs": "--num-train-epochs", "--steps": "--max-steps",
            "--temp": "--temperature", "--n": "--samples", "--model": "--models", "--student": "--students"}  # fmt: skip


def unknown_flag(flag: str, parser: argparse.ArgumentParser) -> str:
    """'unknown option --tempreature; did you mean --temperature?'"""
    name = flag.split("=", 1)[0]
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    dashed = name.replace("_", "-")
    close = [SYNONYMS[dashed]] if SYNONYMS.get(dashed) in options else []
    close = close or sorted(o for o in options if o.startswith(dashed) and "_" not in o)[:3]
    close = close or difflib.get_close_matches(dashed, options, n=1, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; see {parser.prog} --help"
    return f"unknown option {name}{hint}"


class ArgumentParser(OneLineErrors, argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)  # a prefix never stands for a whole option


def parse(
    cls: type[C],
    argv: list[str],
    prog: str,
    presets: dict[str, dict] | None = None,
    epilog: str | None = None,
) -> C:
    """Build `cls` from argv (with `--config FILE` and, when `presets` is given, `--preset NAME`)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    pre.add_argument("--preset")
    known, rest = pre.parse_known_args(argv)
    from_file = load_yaml(known.config, cls) if known.config else {}
    preset = known.preset or from_file.get("preset")
    defaults = with_preset(from_file | ({"preset": preset} if preset else {}), presets, "--preset")

    from transformers import HfArgumentParser

    class Parser(OneLineErrors, HfArgumentParser):
        @staticmethod
        def _parse_dataclass_field(parser, field):
            """Our marks in a field's metadata (operational, resumable) are not argparse's."""
            plain = copy.copy(field)
            plain.metadata = types.MappingProxyType({k: v for k, v in field.metadata.items() if k not in MARKS})
            HfArgumentParser._parse_dataclass_field(parser, plain)

    parser = Parser(cls, prog=prog, formatter_class=_HelpFormatter, epilog=epilog, allow_abbrev=False)
    parser.add_argument("--config", help="YAML file setting any of the options below; flags override it")
    _tidy_help(parser, cls)
    parser.set_defaults(**defaults)
    args = [*(["--preset", preset] if preset else []), *rest]
    _, unknown = parser.parse_known_args(args)  # before the config is built: a typo is named as a typo
    if unknown:
        flag = next((a for a in unknown if a.startswith("-")), unknown[0])
        raise UserError(unknown_flag(flag, parser) if flag.startswith("-") else f"unexpected argument {flag!r}")
    return parser.parse_args_into_dataclasses(args=args)[0]  # [1] would be the leftover --config namespace


def _tidy_help(parser: argparse.ArgumentParser, cls: type) -> None:
    """`--no-x` says what it does (not x's help again); the fields `cls` declares itself come first
    (for `train`: ownwords' and the s1 recipe's before the rest of TRL's SFTConfig)."""
    own = {name: i for i, name in enumerate(vars(cls).get("__annotations__", {}))}
    for action in parser._actions:
        if action.option_strings and action.option_strings[0].startswith("--no_"):
            action.help = f"Turn off --{action.dest.replace('_', '-')}."
    for group in parser._action_groups:
        group._group_actions.sort(
            key=lambda a: (a.dest not in own and a.dest not in ("help", "config"), own.get(a.dest, -1))
        )


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


class Result:
    """A stage's result (a dataclass): attributes for code, `to_json()` for a stamp or the command's
    output, `from_json()` back; and readable like the dict it is as JSON (`result["samples"]`), as
    transformers' ModelOutput is, so code written against the dicts keeps working."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key) if key in self.keys() else default

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def items(self):
        return [(k, getattr(self, k)) for k in self.keys()]

    def __eq__(self, other) -> bool:  # the subclasses are @dataclass(eq=False) to keep this
        if isinstance(other, Result):
            return type(self) is type(other) and self.to_json() == other.to_json()
        if isinstance(other, dict):
            return self.to_json() == other
        return NotImplemented

    __hash__ = None
