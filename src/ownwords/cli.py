"""The one `ownwords` command: a subcommand per stage, each a thin wrapper over a library function."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from .errors import UserError
from .files import environment_error

USAGE = """usage: ownwords [--debug] <command> [options]   (ownwords <command> --help for its options)

commands:
  generate   RSD traces for a question set into a resumable SQLite store
  select     filter the traces (well formed, answer verified) and choose one per question
  export     write the chosen traces as a chat dataset for TRL (jsonl, parquet, save_to_disk, hub)
  train      fine-tune the student on exported traces (TRL SFTTrainer, s1 recipe defaults)
  distill    on-policy distillation of the student by the teacher (TRL DistillationTrainer; same vocabulary)
  analyze    score traces under students: low-probability tokens, plots, cross-model matrix, HTML view
  eval       reasoning benchmarks (AIME24/25, MATH500, GPQA-Diamond, GSM8K, AMC23): pass@1, pass@k, maj@n
  experiment one YAML: arms (teacher / rsd / self / mask / onpolicy, sweeps, rounds, students) through every stage, cached; one report
  probe      will this teacher-student pair work, and what will the run cost (minutes, before the run)
  demo       the whole loop on tiny models trained here: RSD vs teacher traces, SFT, eval, analysis (minutes, CPU)
  tiny       write a tiny teacher/student pair (random weights, local tokenizer) to try every command
  prune      a student from its teacher: the same model with only some of its layers (Minitron-style)

--debug shows the full traceback of an error; --version prints the version.
"""
RESUMABLE = {"generate", "eval", "demo", "experiment"}


# Each command parses its flags with its torch-free config first (`--help` and typos cost no model
# code), then imports the stage that runs it.


def _generate(argv: list[str]) -> None:
    from .config import parse
    from .stages.generate_config import PRESETS, GenerateConfig

    config = parse(GenerateConfig, argv, prog="ownwords generate", presets=PRESETS)
    from .stages.generate import generate

    print(json.dumps(generate(config).to_json(), indent=2))


def _select(argv: list[str]) -> None:
    from .config import parse
    from .stages.select_config import SelectConfig

    config = parse(SelectConfig, argv, prog="ownwords select")
    from .stages.select import select

    print(json.dumps(select(config).to_json(), indent=2))


def _export(argv: list[str]) -> None:
    from .config import parse
    from .stages.export_config import ExportConfig

    config = parse(ExportConfig, argv, prog="ownwords export")
    from .stages.export import export

    print(f"exported {len(export(config))} traces to {config.out}")  # the one line: the library logs nothing


def _train(argv: list[str]) -> None:
    from .config import parse
    from .stages.train_config import TrainConfig

    epilog = (
        "The options first in this list are ownwords' own and the s1 recipe's defaults; the rest are "
        "trl.SFTConfig's (and transformers.TrainingArguments'), see TRL's SFTConfig documentation."
    )
    config = parse(TrainConfig, argv, prog="ownwords train", epilog=epilog)
    from .stages.train import train

    print(json.dumps(train(config).to_json(), indent=2))


def _distill(argv: list[str]) -> None:
    from .config import parse
    from .stages.distill_config import DistillConfig

    epilog = "The options first in this list are ownwords' own; the rest are trl.DistillationConfig's."
    config = parse(DistillConfig, argv, prog="ownwords distill", epilog=epilog)
    from .stages.distill import distill

    print(json.dumps(distill(config).to_json(), indent=2))


def _eval(argv: list[str]) -> None:
    from .config import parse
    from .stages.evaluate_config import EvalConfig

    config = parse(EvalConfig, argv, prog="ownwords eval")
    from .render.evaluation import table
    from .stages.evaluate import evaluate

    print(table(evaluate(config), config.benchmarks))
    print(f"results in {config.out}/results.json")


def _analyze(argv: list[str]) -> None:
    from .config import parse
    from .stages.analyze_config import AnalyzeConfig

    config = parse(AnalyzeConfig, argv, prog="ownwords analyze")
    from .render.analysis import matrix_table
    from .stages.analyze import analyze

    print(matrix_table(analyze(config)))
    print(f"report in {config.out}/report.md")


def _probe(argv: list[str]) -> int:
    from .config import parse
    from .stages.generate_config import PRESETS
    from .stages.probe_config import ProbeConfig

    config = parse(ProbeConfig, argv, prog="ownwords probe", presets=PRESETS)
    from .stages.probe import probe

    result = probe(config)
    print((Path(config.out) / "probe.md").read_text(), end="")
    return 1 if result.blocked else 0  # the pair cannot run as configured: the verdict says why


def _demo(argv: list[str]) -> None:
    from .config import parse
    from .demo.config import DemoConfig

    config = parse(DemoConfig, argv, prog="ownwords demo")
    from .demo.run import run_demo

    run_demo(config)
    print((Path(config.out) / "experiment" / "report.md").read_text())


def _experiment(argv: list[str]) -> None:
    from .config import ArgumentParser

    parser = ArgumentParser(
        prog="ownwords experiment",
        description="Run an experiment YAML (see recipes/experiment_paper.yaml). Re-running it skips every "
        "stage whose config and inputs are unchanged, and resumes a killed run.",
    )
    parser.add_argument("config", help="the experiment's YAML file, or a shipped recipe's name (experiment_paper)")
    parser.add_argument("--out", help="experiment folder (overrides the YAML's `out`)")
    args = parser.parse_args(argv)
    from .experiment.plan import load_experiment
    from .experiment.runner import experiment

    config = load_experiment(args.config)
    if args.out:
        config.out = args.out
    summary = experiment(config)
    ran = [s["stage"] for s in summary["this_run"] if s["status"] == "ran"]
    print(
        f"{len(ran)} stage(s) ran, {len(summary['this_run']) - len(ran)} up to date; report in {config.out}/report.md"
    )


def _tiny(argv: list[str]) -> None:
    from .config import ArgumentParser

    parser = ArgumentParser(prog="ownwords tiny", description="Write OUTDIR/teacher and OUTDIR/student.")
    parser.add_argument("outdir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from .models.tiny import make_tiny_pair

    try:
        teacher, student = make_tiny_pair(args.outdir, seed=args.seed)
    except OSError as err:
        raise UserError(f"output folder {args.outdir!r}: cannot write the tiny pair there ({err})") from err
    print(f"teacher: {teacher}\nstudent: {student}")


def _prune(argv: list[str]) -> None:
    from .config import ArgumentParser

    parser = ArgumentParser(
        prog="ownwords prune",
        description="A student from its teacher: the same model with only some of its decoder layers (as "
        "Minitron students are made before distillation); same tokenizer and vocabulary.",
    )
    parser.add_argument("model", help="the teacher: a model folder, hub id or GGUF file")
    parser.add_argument("out", help="where the pruned model is written")
    parser.add_argument("--keep", required=True, help="a number of layers (evenly spaced), or indices: 0-9,20")
    args = parser.parse_args(argv)
    from .models.prune import prune_layers

    print(f"pruned model: {prune_layers(args.model, args.out, args.keep)}")


COMMANDS = {
    "generate": _generate,
    "select": _select,
    "export": _export,
    "train": _train,
    "distill": _distill,
    "eval": _eval,
    "analyze": _analyze,
    "probe": _probe,
    "experiment": _experiment,
    "demo": _demo,
    "tiny": _tiny,
    "prune": _prune,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["--version"]:
        from importlib.metadata import version

        print(f"ownwords {version('ownwords')}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"ownwords: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        code = command(argv[1:]) or 0
    except UserError as err:  # bad input: say what and where; anything else is a bug and keeps its traceback
        if debug:
            raise
        print(f"ownwords {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine's: a full disk, a read-only folder (anything else is a bug)
        line = environment_error(err)
        if line is None or debug:
            raise
        print(f"ownwords {argv[0]}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        again = " re-run the same command to resume; finished work is kept." if argv[0] in RESUMABLE else ""
        print(f"\nownwords {argv[0]}: interrupted.{again}", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
