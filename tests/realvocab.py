"""Real vocabularies without a hub: Qwen2.5- and Qwen3-style tokenizers built from the Qwen BPE ranks,
a Tekken-vocabulary tokenizer, and random-weight models with the real logits widths. The files come
from ../shared/data/tokenizers (see its SOURCES.md); tests using them skip when it is absent."""

import functools
import json
from pathlib import Path

import pytest
from helpers import SHARED_DATA

TOKENIZERS = SHARED_DATA / "tokenizers"
QWEN_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN25_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]  # fmt: skip
QWEN3_ONLY = ["<tool_response>", "</tool_response>", "<think>", "</think>"]
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WIDTH = {"qwen3": 151_936, "qwen2.5": 152_064}  # the real models' embedding rows (padded past the tokenizer)


def need(name: str) -> Path:
    path = TOKENIZERS / name
    if not path.exists():
        pytest.skip(f"{path} is absent (real vocabularies live in ../shared/data/tokenizers beside the repo)")
    return path


@functools.cache
def _converted(vocab_file: str, pattern: str) -> str:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    return TikTokenConverter(vocab_file=vocab_file, pattern=pattern).converted().to_str()


def _wrap(serialized: str, specials: list[str], added: list[str], eos: str, pad: str):
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_str(serialized)
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in specials]
    )  # ids in this order
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad, chat_template=CHATML)


def qwen_tokenizer(generation: str):
    """Qwen2.5 (22 special tokens, ids 151643-151664) or Qwen3 (26: + tool_response and think pairs)."""
    base = _converted(str(need("qwen.tiktoken")), QWEN_PATTERN)
    added = QWEN3_ONLY if generation == "qwen3" else []
    return _wrap(base, QWEN25_SPECIAL, added, eos="<|im_end|>", pad="<|endoftext|>")


def tekken_tokenizer(tmp_dir: Path):
    """Mistral's Tekken vocabulary (its default 130,072 ordinary tokens) and a few of its specials; ids
    differ from Mistral's (ranks start at 0 here), which alignment by token string does not see."""
    data = json.loads(need("tekken_240911.json").read_text())
    ordinary = data["config"]["default_vocab_size"] - data["config"]["default_num_special_tokens"]
    ranks = tmp_dir / "tekken.tiktoken"
    ranks.write_text("".join(f"{t['token_bytes']} {t['rank']}\n" for t in data["vocab"][:ordinary]))
    base = _converted(str(ranks), data["config"]["pattern"])
    return _wrap(base, ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"], [], eos="</s>", pad="<unk>")


def random_model(
    tokenizer, width: int, hidden: int = 64, layers: int = 1, real_qwen3_06b: bool = False, seed: int = 0
):
    """A random-weight causal LM whose logits are `width` wide. real_qwen3_06b: Qwen3-0.6B's own
    shapes (hidden 1024, 16/8 heads of 128, intermediate 3072, tied embeddings), cut to `layers`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    shape = (
        dict(hidden_size=1024, num_attention_heads=16, num_key_value_heads=8, head_dim=128, intermediate_size=3072,
             tie_word_embeddings=True)
        if real_qwen3_06b
        else dict(hidden_size=hidden, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                  intermediate_size=2 * hidden, tie_word_embeddings=False)
    )  # fmt: skip
    config = AutoConfig.for_model(
        "qwen3", vocab_size=width, num_hidden_layers=layers, max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None, **shape,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id
    )
    return model
