from transformers import AutoConfig

from ownwords.cli import main
from ownwords.lm import load_model
from ownwords.tiny import STUDENT, arithmetic_chats, build_model, corpus, fit_lm, train_tokenizer


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
