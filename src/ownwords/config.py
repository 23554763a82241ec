"""Stage configs from YAML and the command line: defaults < preset < YAML file < flags.

Each stage has one dataclass (fields carry their help text; `__post_init__` validates). The parser is
transformers' `HfArgumentParser`, so every field is a flag (`--max-new-tokens` or `--max_new_tokens`).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml
from transformers import HfArgumentParser

from .errors import MissingInput, UserError

C = TypeVar("C")


def read_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file holding a mapping (an empty file is an empty one)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{what} {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{what} {str(path)!r} is not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {str(path)!r}: expected a mapping of option: value")
    return data


def load_yaml(path: str | Path, cls: type) -> dict[str, Any]:
    """A YAML mapping whose keys must all be fields of `cls`."""
    data = read_mapping(path)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"config file {str(path)!r}: unknown keys {unknown}; known keys are {sorted(known)}")
    return data


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown where they say something: not for required options or `--no-...` switches."""

    def _get_help_string(self, action):
        if action.default is None or action.option_strings[0].startswith("--no"):
            return action.help
        return super()._get_help_string(action)


def parse(
    cls: type[C],
    argv: list[str],
    prog: str,
    presets: dict[str, dict] | None = None,
    epilog: str | None = None,
) -> C:
    """Build `cls` from argv (with `--config FILE` and, when `presets` is given, `--preset NAME`)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--preset")
    known, rest = pre.parse_known_args(argv)
    from_file = load_yaml(known.config, cls) if known.config else {}
    preset = known.preset or from_file.get("preset")
    defaults: dict[str, Any] = {}
    if preset is not None:
        if not presets or preset not in presets:
            raise UserError(f"--preset {preset!r} is unknown; expected one of {sorted(presets or {})}")
        defaults.update(presets[preset], preset=preset)
    defaults.update(from_file)

    parser = HfArgumentParser(cls, prog=prog, formatter_class=_HelpFormatter, epilog=epilog)
    parser.add_argument("--config", help="YAML file setting any of the options below; flags override it")
    _tidy_help(parser, cls)
    parser.set_defaults(**defaults)
    args = [*(["--preset", preset] if preset else []), *rest]
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
