from transformers import AutoConfig

from ownwords.cli import main
from ownwords.models.loading import load_model
from ownwords.models.tiny import STUDENT, arithmetic_chats, build_model, corpus, fit_lm, train_tokenizer


def test_tiny_command_writes_a_loadable_pair(tmp_path, capsys):
    assert main(["tiny", str(tmp_path / "pair")]) == 0
    assert "teacher:" in capsys.readouterr().out
    for name, model_type in (("teacher", "qwen3"), ("student", "llama")):
        path = tmp_path / "pair" / name
        assert (path / "model.safetensors").exists()
        assert AutoConfig.from_pretrained(path).model_type == model_type
        model, tok = load_model(str(path), "cpu", "float32")
        assert tok.chat_template and model.get_output_embeddings().weight.shape[0] >= len(tok)


def test_fit_lm_lowers_the_loss():
    tok = train_tokenizer(corpus(n=500), vocab_size=400, added_tokens=("<think>", "</think>"))
    model = build_model(STUDENT, tok, seed=1)
    texts = [tok.apply_chat_template(c, tokenize=False) for c in arithmetic_chats(200)]
    losses = fit_lm(model, tok, texts, steps=40, batch_size=8, lr=3e-3)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert not model.training


def test_the_tiny_pair_differs_as_real_pairs_do(tiny_pair):
    """What the pair exists for (DESIGN §4): a shared base vocabulary, added tokens of each side's own
    (the student's <think>/</think>, a teacher-only token), embeddings padded past each tokenizer,
    two architectures."""
    from ownwords.models.facts import logits_width
    from ownwords.models.loading import load_pair

    (t_model, t_tok), (s_model, s_tok) = (load_model(str(p), "cpu", "float32") for p in tiny_pair)
    t_vocab, s_vocab = set(t_tok.get_vocab()), set(s_tok.get_vocab())
    assert s_vocab - t_vocab == {"<think>", "</think>"} and t_vocab - s_vocab == {"<|teacher_only|>"}
    assert logits_width(t_model) > len(t_tok) and logits_width(s_model) > len(s_tok)
    assert t_model.config.model_type != s_model.config.model_type
    alignment = load_pair(str(tiny_pair[0]), str(tiny_pair[1]), "cpu", "float32")[3]
    assert alignment.shared == len(s_tok) - 2 and not alignment.identity
    think = s_tok.convert_tokens_to_ids("<think>")
    pieces = alignment.to_teacher([think])
    assert len(pieces) > 1 and t_tok.decode(pieces) == "<think>"


def test_fit_lm_killed_and_resumed_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    import pytest
    import torch

    tok = train_tokenizer(corpus(n=200), vocab_size=300)
    texts = [tok.apply_chat_template(c, tokenize=False) for c in arithmetic_chats(50)]
    whole = build_model(STUDENT, tok, seed=3)
    fit_lm(whole, tok, texts, steps=12, batch_size=4)
    resumed, ckpt = build_model(STUDENT, tok, seed=3), tmp_path / "train.pt"
    calls = {"n": 0}
    original = torch.optim.AdamW.step

    def dies_at_step_8(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", dies_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        fit_lm(resumed, tok, texts, steps=12, batch_size=4, checkpoint=ckpt, every=5)
    monkeypatch.setattr(torch.optim.AdamW, "step", original)
    fresh = build_model(STUDENT, tok, seed=99)  # a new process: other weights until the checkpoint loads
    losses = fit_lm(fresh, tok, texts, steps=12, batch_size=4, checkpoint=ckpt, every=5)
    assert len(losses) == 12
    for a, b in zip(whole.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
