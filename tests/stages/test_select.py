"""Selection filters and policies on hand-made traces; export to a dataset TRL trains on."""

import json

import pytest

from ownwords.cli import main
from ownwords.data.store import TraceStore
from ownwords.errors import UserError
from ownwords.stages.export import ExportConfig, export
from ownwords.stages.select import SelectConfig, select

PROMPT = "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n<think>\n"
END = "</think>"
GOOD = f"reasoning{END} so \\boxed{{4}}"
# (question id, sample index, gold, text, finish reason, tokens, fallbacks) -> expected status / reason
SAMPLES = [
    ("q1", 0, "4", "long " * 30 + GOOD, "eos", 40, 4, "passed", None),
    ("q1", 1, "4", GOOD, "eos", 10, 1, "chosen", None),
    ("q1", 2, "4", f"hm{END} \\boxed{{5}}", "eos", 8, 0, "dropped", "correct"),
    ("q2", 0, "4", f"a{END} b{END} \\boxed{{4}}", "eos", 10, 0, "dropped", "thinking_format"),
    ("q2", 1, "4", "cut off mid-thought", "length", 10, 0, "dropped", "finished"),
    ("q2", 2, "4", GOOD, "eos", 10, 8, "dropped", "fallback_rate"),
    ("q2", 3, "4", f"done{END} no answer", "eos", 10, 0, "dropped", "has_answer"),
    ("q3", 0, "We prove the claim by induction on n. " * 10, GOOD, "eos", 10, 0, "dropped", "unverifiable"),
    ("q4", 0, "so 1234 items\n#### 1,234", f"ok{END} \\boxed{{1234}}", "stop", 10, 0, "chosen", None),
]


@pytest.fixture
def store(tmp_path, tiny_pair):
    path = tmp_path / "s.sqlite"
    with TraceStore(path) as st:
        config = {"student": str(tiny_pair[1]), "generation_prefix": "<think>\n", "system_prompt": "Think."}
        st.open_run("default", config)
        for qid, idx, gold, text, reason, n, nf, *_ in SAMPLES:
            st.add(
                "default",
                dict(
                    question_id=qid,
                    sample_index=idx,
                    seed=idx,
                    question=f"Question {qid}?",
                    answer=gold,
                    prompt=PROMPT,
                    text=text,
                    token_ids=[5] * n,
                    teacher_probs=[0.5] * n,
                    scores=[0.5] * n,
                    fallbacks=[1] * nf + [0] * (n - nf),
                    trials=[1] * n,
                    n_tokens=n,
                    n_fallbacks=nf,
                    finish_reason=reason,
                    wall_seconds=0.1,
                ),
            )
    return path


def statuses(path):
    with TraceStore(path) as st:
        return {
            (r[0], r[1]): (r[2], r[3])
            for r in st.db.execute("SELECT question_id, sample_index, status, reason FROM selection")
        }


def test_every_sample_is_explained(store):
    report = select(SelectConfig(store=str(store)))
    assert report["thinking_end"] == END  # found from the student tokenizer's added tokens
    assert statuses(store) == {(q, i): (status, reason) for q, i, *_, status, reason in SAMPLES}
    assert report["dropped"] == {
        "finished": 1,
        "thinking_format": 1,
        "fallback_rate": 1,
        "has_answer": 1,
        "unverifiable": 1,
        "correct": 1,
    }
    assert report["questions"] == 4 and report["questions_covered"] == 2 and report["samples_kept"] == 2
    assert report["questions_without_sample"] == 2 and report["questions_without_sample_examples"] == ["q2", "q3"]
    assert json.loads((store.parent / "s.sqlite.default.select.json").read_text()) == report


def test_policies_and_switches(store):
    select(SelectConfig(store=str(store), policy="first"))
    assert statuses(store)[("q1", 0)][0] == "chosen" and statuses(store)[("q1", 1)][0] == "passed"
    assert select(SelectConfig(store=str(store), policy="all"))["samples_kept"] == 3
    assert statuses(store)[("q3", 0)][1] == "unverifiable"
    select(SelectConfig(store=str(store), unverifiable="keep"))
    assert statuses(store)[("q3", 0)][0] == "chosen"
    report = select(SelectConfig(store=str(store), require_correct=False, policy="all"))
    assert statuses(store)[("q1", 2)][0] == "chosen" and report["dropped"]["correct"] == 0
    assert select(SelectConfig(store=str(store), max_fallback_rate=0.9))["dropped"]["fallback_rate"] == 0


def test_least_surprising_keeps_the_trace_of_lowest_mean_nll_under_the_student(tmp_path, tiny_pair):
    """q1's short trace is the shortest but the student finds it surprising; its long one is not."""
    path = tmp_path / "ls.sqlite"
    scores = {0: [0.9] * 40, 1: [0.1] * 10, 2: [0.95] * 5 + [1e-4] * 15}  # mean NLL 0.105, 2.30, 6.95
    with TraceStore(path) as st:
        st.open_run("default", {"student": str(tiny_pair[1]), "generation_prefix": "<think>\n", "score": "raw"})
        for idx, a in scores.items():
            st.add("default", dict(question_id="q1", sample_index=idx, seed=idx, question="Q?", answer="4",
                                   prompt=PROMPT, text=GOOD, token_ids=[5] * len(a), teacher_probs=[0.5] * len(a),
                                   scores=a, fallbacks=[0] * len(a), trials=[1] * len(a), n_tokens=len(a),
                                   n_fallbacks=0, finish_reason="eos", wall_seconds=0.1))  # fmt: skip
    select(SelectConfig(store=str(path)))
    assert statuses(path)[("q1", 1)][0] == "chosen"  # shortest
    select(SelectConfig(store=str(path), policy="least_surprising"))
    assert [statuses(path)[("q1", i)][0] for i in range(3)] == ["chosen", "passed", "passed"]
    with TraceStore(path) as st:
        st.db.execute("UPDATE runs SET config = ? WHERE run = 'default'", (json.dumps({"score": "processed"}),))
    with pytest.raises(UserError, match="least_surprising ranks traces by the student's log-likelihood"):
        select(SelectConfig(store=str(path), policy="least_surprising"))


def test_export_formats_round_trip(store, tmp_path):
    from datasets import Dataset, load_from_disk

    select(SelectConfig(store=str(store)))
    written = export(ExportConfig(store=str(store), out=str(tmp_path / "d.jsonl")))
    loaded = {
        "jsonl": Dataset.from_json(str(tmp_path / "d.jsonl")),
        "parquet": (
            export(ExportConfig(store=str(store), out=str(tmp_path / "d.parquet"))),
            Dataset.from_parquet(str(tmp_path / "d.parquet")),
        )[1],
        "disk": (
            export(ExportConfig(store=str(store), out=str(tmp_path / "d"))),
            load_from_disk(str(tmp_path / "d")),
        )[1],
    }
    for ds in loaded.values():
        assert ds.to_list() == written.to_list()
    first = written[0]
    assert first["prompt"] == [
        {"role": "system", "content": "Think."},
        {"role": "user", "content": "Question q1?"},
    ]
    assert first["completion"] == [{"role": "assistant", "content": "<think>\n" + GOOD}]
    assert [(r["question_id"], r["sample_index"]) for r in written] == [("q1", 1), ("q4", 0)]


def test_trl_supervises_exactly_the_assistant_turn(store, tmp_path, tiny_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    select(SelectConfig(store=str(store)))
    dataset = export(ExportConfig(store=str(store), out=str(tmp_path / "d.jsonl")))
    student = str(tiny_pair[1])
    tokenizer = AutoTokenizer.from_pretrained(student)
    args = SFTConfig(output_dir=str(tmp_path / "out"), report_to=[], max_length=512, use_cpu=True,
                     gradient_checkpointing=None, activation_checkpointing=False)  # not the deprecated alias
    trainer = SFTTrainer(
        AutoModelForCausalLM.from_pretrained(student),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    row = trainer.train_dataset[0]
    supervised = [t for t, m in zip(row["input_ids"], row["labels"]) if m != -100]
    assert tokenizer.decode(supervised).startswith("<think>\n" + GOOD)
    unsupervised = tokenizer.decode([t for t, m in zip(row["input_ids"], row["labels"]) if m == -100])
    assert unsupervised == tokenizer.apply_chat_template(
        dataset[0]["prompt"], tokenize=False, add_generation_prompt=True
    )


def test_push_to_hub_is_called_with_the_repo(store, tmp_path, monkeypatch):
    from datasets import Dataset

    pushed = {}
    monkeypatch.setattr(
        Dataset, "push_to_hub", lambda self, repo, private: pushed.update(repo=repo, rows=len(self))
    )
    select(SelectConfig(store=str(store)))
    export(ExportConfig(store=str(store), out=str(tmp_path / "d.jsonl"), push_to_hub="me/traces"))
    assert pushed == {"repo": "me/traces", "rows": 2}


def test_bad_input(store, tmp_path, capsys):
    assert main(["select", "--store", str(tmp_path / "none.sqlite")]) == 2
    assert "none.sqlite" in capsys.readouterr().err
    assert main(["select", "--store", str(store), "--run", "nope"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert main(["export", "--store", str(store), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "run `ownwords select` first" in capsys.readouterr().err
    assert main(["select", "--store", str(store), "--policy", "longest"]) == 2
    assert "policy is 'longest'" in capsys.readouterr().err
    select(SelectConfig(store=str(store)))
    existing = tmp_path / "keep.jsonl"
    existing.write_text("precious\n")
    assert main(["export", "--store", str(store), "--out", str(existing)]) == 2
    assert "already exists" in capsys.readouterr().err and existing.read_text() == "precious\n"
    assert main(["export", "--store", str(store), "--out", str(tmp_path / "x.csv")]) == 2
    assert ".jsonl or .parquet" in capsys.readouterr().err and not list(tmp_path.glob(".x.csv*"))
