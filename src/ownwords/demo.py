"""`ownwords demo`: the whole loop on a laptop, in minutes.

A synthetic reasoning task (a + b - c, answer boxed) and two tiny models trained here on CPU: a
bigger teacher that reasons in a verbose, varied style (paraphrases, "wait, let me verify", filler)
and a much smaller student first trained on a terse style of its own. Then the real pipeline,
through the same library functions the CLI uses: RSD traces and teacher-only traces -> select ->
export -> SFT of two copies of the student with the same budget -> eval of base / SFT-on-teacher /
SFT-on-RSD on held-out questions -> analyze both trace sets under the student -> report.md.
Whether the paper's effect shows at this scale is reported as measured.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .models.loading import set_cpu_threads
from .models.tiny import TinySpec, build_model, fit_lm, train_tokenizer
from .stages.analyze import AnalyzeConfig, analyze
from .stages.evaluate import EvalConfig, evaluate, temperature_key
from .stages.export import ExportConfig, export
from .stages.generate import GenerateConfig, generate
from .stages.select import SelectConfig, select
from .stages.train import TrainConfig, train

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scale:
    train_questions: int
    test_questions: int
    samples: int  # per training question, per trace set
    teacher_steps: int
    student_steps: int
    sft_steps: int
    teacher: TinySpec = TinySpec("qwen3", 128, 3, 4, 2, 384, logit_scale=1.0)
    student: TinySpec = TinySpec("llama", 48, 2, 4, 2, 96, logit_scale=1.0)


SCALES = {
    "full": Scale(
        train_questions=400,
        test_questions=200,
        samples=2,
        teacher_steps=3000,
        student_steps=320,
        sft_steps=120,
    ),
    "quick": Scale(
        train_questions=120, test_questions=80, samples=2, teacher_steps=1200, student_steps=320, sft_steps=60
    ),
}


@dataclass
class DemoConfig:
    out: str = field(
        default="ownwords-demo", metadata={"help": "Where the report, data, models and plots go."}
    )
    quick: bool = field(
        default=False,
        metadata={
            "help": "One seed, smaller everything (about 2.5 minutes on 2 CPU cores; under 30 s once its models are cached)."
        },
    )
    seeds: int = field(default=3, metadata={"help": "SFT seeds per arm (the report gives mean and spread)."})
    fresh: bool = field(default=False, metadata={"help": "Retrain the cached tiny teacher and student."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: the free cores)."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Model cache (default ~/.cache/ownwords/demo)."}
    )

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise UserError(f"seeds is {self.seeds}; expected >= 1")
        if self.quick:
            self.seeds = 1


# -- the task -----------------------------------------------------------------------------------


def problem(rng: random.Random) -> tuple[str, int, int, int]:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    c = rng.randint(1, a + b - 1)
    return f"What is {a} + {b} - {c}?", a, b, c


def terse(a: int, b: int, c: int) -> str:
    s = a + b
    return f"<think>\n{a} + {b} = {s}. {s} - {c} = {s - c}.\n</think>\nThe answer is \\boxed{{{s - c}}}."


def verbose(a: int, b: int, c: int, rng: random.Random) -> str:
    s, r = a + b, a + b - c
    pick = rng.choice
    parts = [
        pick(
            [
                "Alright, let me work through this carefully.",
                "Okay, so we need to combine these numbers.",
                "Let me think about this step by step.",
                "Hmm, this needs two operations.",
            ]
        ),
        pick(
            [
                f"First, I add {a} and {b}, which gives {s}.",
                f"Adding {a} to {b}, I get {s}.",
                f"Starting with {a} plus {b}: that makes {s}.",
            ]
        ),
        pick(
            [
                f"Wait, let me verify: {s} minus {b} is {a}. Yes.",
                f"Hmm, double-check: {a} + {b} is indeed {s}.",
                "That looks right so far.",
            ]
        ),
        pick(
            [
                f"Now subtract {c}: {s} - {c} = {r}.",
                f"Then I take away {c} from {s}, leaving {r}.",
                f"Next, {s} minus {c} equals {r}.",
            ]
        ),
        pick(
            [
                f"Let me verify once more: {r} + {c} = {s}. Good.",
                f"Wait, is that right? {r} plus {c} gives {s}, so yes.",
                "",
            ]
        ),
    ]
    closer = pick(["So the final answer is", "Therefore, the answer is", "The answer is"])
    return "<think>\n" + " ".join(p for p in parts if p) + f"\n</think>\n{closer} \\boxed{{{r}}}."


def write_split(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question, a, b, c = problem(rng)
        rows.append({"id": f"{path.stem}-{i}", "question": question, "answer": str(a + b - c)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# -- the models ---------------------------------------------------------------------------------


def tiny_pair(cache: Path, scale: Scale, fresh: bool) -> tuple[Path, Path]:
    """Teacher (verbose, accurate) and student (terse, weaker), one shared tokenizer. Each model is
    cached under a name that records its architecture and training steps, so a changed scale retrains."""
    rng = random.Random(0)
    examples = [problem(rng)[1:] for _ in range(4000)]
    texts = {
        "teacher": [verbose(a, b, c, rng) for a, b, c in examples],
        "student": [terse(a, b, c) for a, b, c in examples],
    }
    tokenizer = train_tokenizer(
        texts["teacher"] + texts["student"], vocab_size=600, added_tokens=("<think>", "</think>")
    )
    paths = []
    for name, spec, steps in (
        ("teacher", scale.teacher, scale.teacher_steps),
        ("student", scale.student, scale.student_steps),
    ):
        path = cache / f"{name}-{spec.model_type}-{spec.hidden_size}x{spec.num_hidden_layers}-{steps}steps"
        paths.append(path)
        checkpoint = path.with_name(path.name + ".training.pt")  # a killed demo resumes its training here
        if fresh:
            shutil.rmtree(path, ignore_errors=True)
            checkpoint.unlink(missing_ok=True)
        if (path / "model.safetensors").exists():
            continue
        model = build_model(spec, tokenizer, seed=1 if name == "teacher" else 2)
        chats = [
            tokenizer.apply_chat_template(
                [
                    {"role": "user", "content": f"What is {a} + {b} - {c}?"},
                    {"role": "assistant", "content": t},
                ],
                tokenize=False,
            )
            for (a, b, c), t in zip(examples, texts[name], strict=True)
        ]
        losses = fit_lm(
            model,
            tokenizer,
            chats,
            steps,
            batch_size=16,
            lr=3e-3,
            checkpoint=checkpoint,
            every=50,
            progress=f"training the tiny {name}",
        )
        logger.info("demo %s: %d steps, loss %.3f -> %.3f", name, steps, losses[0], sum(losses[-10:]) / 10)
        tokenizer.save_pretrained(path)
        model.save_pretrained(path)  # written last: its presence marks a complete cache entry
        checkpoint.unlink()
    return paths[0], paths[1]


# -- the loop -----------------------------------------------------------------------------------


class _Timer:
    """Wall time per stage, summed over its calls."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return result


def run_demo(config: DemoConfig) -> dict:
    """The whole loop on the synthetic task; writes OUT/report.md and OUT/demo.json."""
    scale = SCALES["quick" if config.quick else "full"]
    out = Path(config.out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    cache = Path(
        config.cache_dir
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ownwords" / "demo"
    )
    timer = _Timer()
    set_cpu_threads(config.threads)
    cached = timer("models", tiny_pair, cache, scale, config.fresh)
    # Published under OUT/models by their role (copies keep modification times, so the evaluation's
    # weight fingerprint changes only when the models were retrained): every stage can be tried on them.
    teacher, student = (out / "models" / role for role in ("teacher", "student"))
    for source, target in zip(cached, (teacher, student), strict=True):
        shutil.copytree(source, target, dirs_exist_ok=True)
    write_split(out / "data" / "arithmetic_train.jsonl", scale.train_questions, seed=1)
    write_split(out / "data" / "arithmetic_test.jsonl", scale.test_questions, seed=2)
    summaries, selections, datasets = {}, {}, {}
    for run, threshold in (("rsd", 0.01), ("teacher", 0.0)):
        summaries[run], selections[run], datasets[run] = _trace_set(
            out, teacher, student, scale, run, threshold, timer
        )
    models = {"base": str(student)}
    for seed in range(config.seeds):
        for run in ("teacher", "rsd"):
            models[f"sft-{run}-seed{seed}"] = _finetune(out, student, datasets[run], scale, run, seed, timer)
    accuracy = _accuracy(out, models, scale, timer)
    analysis = timer(
        "analyze",
        analyze,
        AnalyzeConfig(students=[str(student)], store=str(out / "traces.sqlite"), out=str(out / "analysis")),
    )
    summary = dict(
        scale=scale.__dict__ | {"teacher": scale.teacher.__dict__, "student": scale.student.__dict__},
        seeds=config.seeds,
        accuracy=accuracy,
        generation=summaries,
        selection=selections,
        low_probability=analysis["matrix"],
        timings=timer.seconds,
    )
    (out / "demo.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    _accuracy_plot(accuracy, config.seeds, out / "accuracy.png")
    (out / "report.md").write_text(
        demo_report(summary, sorted(p.relative_to(out) for p in out.glob("models/sft-*/loss.png")))
    )
    return summary


def _trace_set(out: Path, teacher: Path, student: Path, scale: Scale, run: str, threshold: float, timer):
    """Generate, select and export one trace set; returns (generation summary, selection report, dataset)."""
    store = str(out / "traces.sqlite")
    gen = GenerateConfig(
        teacher=str(teacher),
        student=str(student),
        questions=str(out / "data" / "arithmetic_train.jsonl"),
        samples=scale.samples,
        threshold=threshold,
        max_new_tokens=96,
        temperature=0.7,
        top_p=0.95,
        batch_size=32,
        system_prompt="",
        generation_prefix="<think>\n",
        store=store,
        run=run,
        progress=False,
    )
    summary = timer("generate", generate, gen)
    selection = timer("select", select, SelectConfig(store=store, run=run))
    dataset = out / "data" / f"sft_{run}.jsonl"
    timer("export", export, ExportConfig(store=store, run=run, out=str(dataset), overwrite=True))
    return summary, selection, dataset


def _finetune(out: Path, student: Path, dataset: Path, scale: Scale, run: str, seed: int, timer) -> str:
    target = out / "models" / f"sft-{run}-seed{seed}"
    cfg = TrainConfig(
        model=str(student),
        dataset=str(dataset),
        output_dir=str(target),
        max_steps=scale.sft_steps,
        learning_rate=3e-4,
        effective_batch_size=8,
        seed=seed,
        use_cpu=True,
        max_length=256,
        disable_tqdm=False,
        save_only_model=True,
    )
    timer("train", train, cfg)
    return str(target)


def _accuracy(out: Path, models: dict[str, str], scale: Scale, timer) -> dict[str, float]:
    """Greedy pass@1 of every model on the held-out questions."""
    ev = EvalConfig(
        models=list(models.values()),
        benchmarks=["arithmetic"],
        data=[str(out / "data" / "arithmetic_test.jsonl")],
        temperatures=["0"],
        max_new_tokens=96,
        instruction=False,
        generation_prefix="<think>\n",
        batch_size=40,
        out=str(out / "eval"),
        progress=False,
    )
    results = timer("eval", evaluate, ev)
    greedy = temperature_key(0)
    return {
        name: results[path]["arithmetic"]["temperatures"][greedy]["pass@1"] for name, path in models.items()
    }


def _arm(accuracy: dict, arm: str) -> tuple[float, float]:
    values = [v for k, v in accuracy.items() if k.startswith(f"sft-{arm}-")]
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _speed(generation: dict) -> str:
    """tokens/s of this call's generation; a rerun that found every trace in the store made none."""
    return f"{generation['tokens_per_second']:.0f}" if generation.get("new_samples") else "reused"


ARMS = (("base", "base student"), ("teacher", "SFT on teacher traces"), ("rsd", "SFT on RSD traces"))


def _accuracy_plot(accuracy: dict, seeds: int, path: Path) -> None:
    """One bar per arm: mean accuracy over SFT seeds, ± standard deviation, each seed a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for x, (arm, _) in enumerate(ARMS):
        values = (
            [100 * accuracy["base"]]
            if arm == "base"
            else [100 * v for k, v in accuracy.items() if k.startswith(f"sft-{arm}-")]
        )
        mean, sd = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
        ax.bar(x, mean, 0.6, yerr=sd, capsize=4, color=("#9e9e9e", "#d9534f", "#337ab7")[x])
        ax.plot([x] * len(values), values, "k.", alpha=0.6)
        ax.text(x, mean + sd + 1, f"{mean:.1f}%", ha="center", fontsize=9)
    ax.set_xticks(range(len(ARMS)), [label.replace(" on ", "\non ") for _, label in ARMS])
    ax.set(
        ylabel="accuracy on held-out questions (%)",
        title=f"ownwords demo: greedy accuracy, {seeds} SFT seed(s)",
    )
    ax.set_ylim(0, max(100 * max(accuracy.values()) + 10, 10))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def demo_report(summary: dict, loss_plots: list[Path] = ()) -> str:
    acc = summary["accuracy"]
    th = {run: s for run, s in summary["generation"].items()}
    rows = [
        ("base student", acc["base"], 0.0),
        ("SFT on teacher traces", *_arm(acc, "teacher")),
        ("SFT on RSD traces", *_arm(acc, "rsd")),
    ]
    lines = [
        "# ownwords demo",
        "",
        "A tiny verbose teacher, a tiny terse student, a synthetic task (a + b - c). RSD traces vs teacher-only",
        "traces, each used to fine-tune the same student with the same budget; accuracy on held-out questions",
        f"(greedy, {summary['scale']['test_questions']} questions; mean ± standard deviation over {summary['seeds']} seed(s)).",
        "",
        "| student | accuracy |",
        "|---|---|",
        *[f"| {name} | {100 * mean:.1f}% ± {100 * sd:.1f} |" for name, mean, sd in rows],
        "",
        "## The traces",
        "",
        "| trace set | correct / generated | questions covered | fallback rate | tokens/s | tokens under p_th for the student |",
        "|---|---|---|---|---|---|",
    ]
    for run in ("rsd", "teacher"):
        low = next(iter(summary["low_probability"][run].values()))
        sel = summary["selection"][run]
        lines.append(
            f"| {run} | {sel['samples_passed']} / {sel['samples']} | {sel['questions_covered']} / {sel['questions']} | "
            f"{th[run]['fallback_rate']:.3f} | "
            f"{_speed(th[run])} | {100 * low:.2f}% |"
        )
    lines += [
        "",
        "## Wall time per stage",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in summary["timings"].items()],
        "",
        "## Plots",
        "",
        "![accuracy per arm](accuracy.png)",
        "",
        "* [accuracy per arm](accuracy.png), [evaluation per model](eval/comparison.png)",
        "* [low-probability tokens, trace sets x students](analysis/matrix.png), "
        "[token probability histogram](analysis/histogram.png), [where the unlikely tokens are](analysis/position.png)",
        "* training loss: " + ", ".join(f"[{p.parent.name}]({p})" for p in loss_plots),
        "* the traces token by token: [analysis/traces.html](analysis/traces.html); analysis report: "
        "[analysis/report.md](analysis/report.md); evaluation records in `eval/`",
        "",
    ]
    return "\n".join(lines)
