"""Tiny teacher/student pairs built locally: random weights, a tokenizer trained here, a chat template.

They let every command run without a hub or a GPU; tests and benchmarks use this same factory. The
pair shares a trained byte-level BPE vocabulary but differs in added tokens (the student has
``<think>`` / ``</think>``, the teacher an extra token of its own) and in embedding padding, like
real pairs such as s1.1-7B / Qwen3-0.6B (DESIGN §4).
"""

from __future__ import annotations

import logging
import math
import pickle
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

from ..errors import UserError
from .spec import STUDENT, TEACHER, TinySpec  # noqa: F401 (part of this module's API)

logger = logging.getLogger(__name__)

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """Synthetic reasoning-flavoured text to train the tokenizer on."""
    rng = random.Random(seed)
    words = (
        "let me think step by step so the answer is first we compute then add subtract multiply divide "
        "wait check again hmm therefore total each number sum product because of since final result "
        "question solve find value equation apples books students costs dollars minutes hours"
    ).split()
    lines = []
    for _ in range(n):
        a, b = rng.randint(0, 999), rng.randint(1, 99)
        phrase = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))
        lines.append(f"{phrase.capitalize()}: {a} + {b} = {a + b}, so \\boxed{{{a + b}}}.")
    return lines


def train_tokenizer(
    texts: list[str], vocab_size: int = 1024, added_tokens: tuple[str, ...] = ()
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ChatML special tokens and a chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )
    if added_tokens:
        wrapped.add_tokens(list(added_tokens), special_tokens=False)
    return wrapped


def build_model(spec: TinySpec, tokenizer: PreTrainedTokenizerFast, seed: int = 0, pad_to: int = 64):
    """A randomly initialised causal LM for `tokenizer` (embedding padded past its size, as real ones are)."""
    vocab = -(-len(tokenizer) // pad_to) * pad_to
    config = AutoConfig.for_model(
        spec.model_type,
        vocab_size=vocab,
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.hidden_size // spec.num_attention_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=8192,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(
        seed
    )  # from_config draws from the global generator; this is a factory, not the library path
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head.copy_(torch.randn(head.shape, generator=gen) * spec.logit_scale / spec.hidden_size**0.5)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id], pad_token_id=tokenizer.pad_token_id
    )
    return model.eval()


def make_tiny_pair(
    outdir: str | Path, seed: int = 0, teacher: TinySpec = TEACHER, student: TinySpec = STUDENT
) -> tuple[Path, Path]:
    """Write ``outdir/teacher`` and ``outdir/student`` (model, tokenizer, generation config)."""
    outdir = Path(outdir)
    texts = corpus(seed=seed)
    paths = []
    for name, spec, added in (
        ("teacher", teacher, ("<|teacher_only|>",)),
        ("student", student, ("<think>", "</think>")),
    ):
        tokenizer = train_tokenizer(texts, added_tokens=added)
        model = build_model(spec, tokenizer, seed=seed + (name == "student"))
        path = outdir / name
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        n_params = sum(p.numel() for p in model.parameters())
        logger.info("wrote tiny %s (%s, %.1fM parameters) to %s", name, spec.model_type, n_params / 1e6, path)
        paths.append(path)
    return paths[0], paths[1]


def arithmetic_chats(n: int, seed: int = 0) -> list[list[dict]]:
    """Chat conversations with a short, regular reasoning trace and a boxed answer."""
    rng = random.Random(seed)
    chats = []
    for _ in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        answer = (
            f"<think>\nFirst add {a} and {b}. {a} + {b} = {a + b}. "
            f"Let me check: {a + b} - {b} = {a}. Correct.\n</think>\nThe answer is \\boxed{{{a + b}}}."
        )
        chats.append(
            [{"role": "user", "content": f"What is {a} + {b}?"}, {"role": "assistant", "content": answer}]
        )
    return chats


def fit_lm(
    model,
    tokenizer,
    texts: list[str],
    steps: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    checkpoint: Path | None = None,
    every: int = 100,
    progress: str | None = None,
):
    """Plain next-token training on `texts` (AdamW, linear warm-up then cosine decay); returns losses.

    With `checkpoint`, the whole state (weights, optimizer, schedule, random stream, losses) is saved
    there every `every` steps and a run finds it and resumes: killed and restarted, it ends with the
    same weights as a run never interrupted. `progress`: a progress-bar label (None: no bar)."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    encoded = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * 0.5 * (1 + math.cos(math.pi * s / steps)),
    )
    losses = _resume(Path(checkpoint), model, optimizer, schedule, gen) if checkpoint is not None else []
    model.train()
    bar = tqdm(
        total=steps, initial=len(losses), desc=progress, unit="step", disable=None if progress else True
    )
    for step in range(len(losses), steps):
        batch = [encoded[i] for i in torch.randint(len(encoded), (batch_size,), generator=gen).tolist()]
        width = max(len(ids) for ids in batch)
        ids = torch.tensor([x + [tokenizer.pad_token_id] * (width - len(x)) for x in batch])
        labels = torch.tensor([x + [-100] * (width - len(x)) for x in batch])
        with torch.enable_grad():  # callers may have switched autograd off globally
            loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if checkpoint is not None and ((step + 1) % every == 0 or step + 1 == steps):
            _save_checkpoint(Path(checkpoint), model, optimizer, schedule, gen, losses)
    bar.close()
    model.eval()
    return losses


def _resume(path: Path, model, optimizer, schedule, gen) -> list[float]:
    """Load a training checkpoint into the live objects; the losses so far ([] without one)."""
    if not path.is_file():
        return []
    try:  # tensors, dicts, numbers and a generator state only: never code from a file in a cache
        state = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(
            f"training checkpoint {str(path)!r} holds more than tensors and numbers, which is not what ownwords "
            f"writes; it is not loaded: delete it to train from the start ({str(err).splitlines()[0]})"
        ) from None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    gen.set_state(state["generator"])
    logger.info("resuming tiny-model training at step %d (%s)", len(state["losses"]), path)
    return state["losses"]


def _save_checkpoint(path: Path, model, optimizer, schedule, gen, losses) -> None:
    """Written beside, then renamed: a kill mid-save leaves the previous checkpoint intact."""
    state = dict(
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        schedule=schedule.state_dict(),
        generator=gen.get_state(),
        losses=losses,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
