"""Hostile names and values in an experiment: refused in one line before any stage runs, with nothing
written; escaped wherever text from a config is shown; no code from a cache file."""

import pytest
from experiments import experiment_yaml

from ownwords.errors import UserError
from ownwords.experiment.plan import load_experiment, plan
from ownwords.experiment.runner import experiment


def refused(path, tmp_path, match):
    with pytest.raises(UserError, match=match):
        experiment(path)
    assert not (tmp_path / "out").exists(), "a refused experiment wrote something"


@pytest.mark.parametrize(
    "name",
    ["rsd/p0.01", "../../victim", "/tmp/absolute", "<img src=x onerror=alert(1)>", "$\\foo$", "..", "a" * 65, 5],
    ids=["slash", "dotdot", "absolute", "markup", "mathtext", "dots", "long", "number"],
)
def test_names_that_would_become_paths_or_markup_are_refused(demo_models, task, tmp_path, name):
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out",
                           arms=[dict(name=name, kind="rsd")])  # fmt: skip
    refused(path, tmp_path, "is not a usable name")


def test_a_name_that_another_arms_round_would_take_is_refused(demo_models, task, tmp_path):
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out", rounds=2,
                           arms=[dict(name="rsd", kind="rsd"), dict(name="rsd.r2", kind="rsd", threshold=0.05)])  # fmt: skip
    refused(path, tmp_path, "two trace sets would be named 'rsd.r2'")


def test_swept_values_that_are_not_names_are_named_by_position(demo_models, task, tmp_path):
    prompts = ["Think/step by step.", "<b>$\\foo$</b>"]
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out",
                           arms=[dict(name="p", kind="rsd", system_prompt=prompts)])  # fmt: skip
    the_plan = plan(load_experiment(path))
    assert list(the_plan.trace_sets) == ["p@system_prompt=v1", "p@system_prompt=v2"]
    assert [s.config.system_prompt for s in the_plan.stages if s.kind == "generate"] == prompts
    assert [s.arm.swept for s in the_plan.trace_sets.values()] == [("system_prompt", p) for p in prompts]


def test_an_empty_sweep_is_refused(demo_models, task, tmp_path):
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out",
                           arms=[dict(name="rsd", kind="rsd", threshold=[])])  # fmt: skip
    refused(path, tmp_path, "the sweep over 'threshold' has 0 values")


def test_a_yaml_alias_bomb_is_refused_before_anything_runs(demo_models, task, tmp_path):
    """Nine aliases of nine aliases ...: a few lines that expand to 9^9 strings."""
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out")
    names = "abcdefghi"
    bomb = ["lol:", f"  - &a [{', '.join(['lol'] * 9)}]"]
    bomb += [f"  - &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip(names, names[1:])]
    (tmp_path / "e.yaml").write_text("\n".join(bomb) + "\n" + (tmp_path / "e.yaml").read_text())
    refused(path, tmp_path, "YAML aliases")


@pytest.mark.parametrize("key,value", [("seeds", 10**9), ("rounds", 10**12), ("seeds", True), ("seeds", 0)])
def test_seeds_and_rounds_are_bounded_and_counted(demo_models, task, tmp_path, key, value):
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out", **{key: value})
    refused(path, tmp_path, f"'{key}' is {value!r}; expected an integer in \\[1, 100\\]")


def test_a_plan_of_too_many_stages_is_refused(demo_models, task, tmp_path):
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out", seeds=100,
                           arms=[dict(name="rsd", kind="rsd", threshold=[i / 1000 for i in range(1, 200)])])  # fmt: skip
    refused(path, tmp_path, "expands to .* stages")


def test_a_repeated_key_is_refused(demo_models, task, tmp_path):
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out")
    (tmp_path / "e.yaml").write_text((tmp_path / "e.yaml").read_text() + "seeds: 2\n")
    refused(path, tmp_path, "key 'seeds' is given more than once")


def test_a_wrong_type_is_a_user_error_and_a_type_error_inside_a_config_is_a_bug(demo_models, task, tmp_path, monkeypatch):
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out", generate=dict(top_p="high"))
    refused(path, tmp_path, "top_p is 'high'; expected a number")
    from ownwords.stages.select import SelectConfig

    def broken(self):
        raise TypeError("a bug inside the config")

    monkeypatch.setattr(SelectConfig, "__post_init__", broken)
    ok = experiment_yaml(tmp_path / "f.yaml", demo_models, task, tmp_path / "out")
    with pytest.raises(TypeError, match="a bug inside the config"):  # kept, with its traceback
        experiment(ok)


def test_text_from_a_config_is_escaped_where_it_is_shown(tmp_path):
    from ownwords.render.text import cell, code, plot_text, pyplot

    hostile = "<img src=x onerror=alert(1)> | $\\foo$ `x`"
    assert "<img" not in cell(hostile) and "\\|" in cell(hostile)
    assert code(hostile).count("`") == 2 and "\\|" in code(hostile)
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.set_title(plot_text(hostile))
    ax.set_xlabel(plot_text("$\\foo$"))
    fig.savefig(tmp_path / "p.png")  # math text would raise here: Unknown symbol: \foo
    plt.close(fig)


def test_the_eval_chart_shows_a_model_folder_named_like_math_text(tmp_path):
    from ownwords.stages.evaluate import plot_comparison

    cell = {"temperatures": {"0.7": {"pass@1": 0.5, "pass@1_se": 0.1}}}
    plot_comparison({"/m/$\\foo$": {"b": cell}, "/m/plain": {"b": cell}}, ["b"], tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path):
    import pickle

    import torch

    from ownwords.models.tiny import STUDENT, build_model, corpus, fit_lm, train_tokenizer

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    checkpoint = tmp_path / "c.pt"
    torch.save({"losses": [1.0], "model": {}, "payload": Payload()}, checkpoint, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    tok = train_tokenizer(corpus(100), vocab_size=300)
    with pytest.raises(UserError, match="holds more than tensors and numbers"):
        fit_lm(build_model(STUDENT, tok), tok, corpus(10), 2, checkpoint=checkpoint)
    assert not (tmp_path / "pwned").exists(), "code from the checkpoint ran"
