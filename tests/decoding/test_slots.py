"""The slot KV cache: every row reads its own prefix only, written in place; nothing is concatenated or
copied between rows; a layout that cannot fit is refused before any work."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from ownwords.decoding.engine import Engine, Request, Sampling
from ownwords.decoding.slots import SlotCache
from ownwords.errors import UserError
from ownwords.models.facts import stop_token_ids
from ownwords.models.loading import load_model


def reference_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].float()


@pytest.fixture(scope="module", params=["teacher", "student"])
def model(request, tiny_pair):  # a Qwen3 teacher and a Llama student
    teacher, student = tiny_pair
    return AutoModelForCausalLM.from_pretrained(teacher if request.param == "teacher" else student).eval()


def test_ragged_appends_rollback_and_a_reused_slot_match_each_row_alone(model):
    cache = SlotCache(model, 4, 64, pad_id=0)
    rows = {2: [5, 9, 33], 0: [7, 8, 9, 10, 11], 3: [40]}  # slots out of order, of different lengths
    logits = cache.append(list(rows), list(rows.values()))[:, -1]
    for i, ids in enumerate(rows.values()):
        assert torch.allclose(logits[i], reference_logits(model, ids), atol=1e-4)
    blocks = {2: [12], 0: [13, 14, 15], 3: [1, 2]}  # ragged: one row gets three tokens
    logits = cache.append(list(blocks), list(blocks.values()), keep=3)
    for i, (slot, block) in enumerate(blocks.items()):
        rows[slot] += block
        for j in range(len(block)):  # every kept position of a right-aligned row
            assert torch.allclose(logits[i, 3 - len(block) + j], reference_logits(model, rows[slot][: len(rows[slot]) - len(block) + j + 1]), atol=1e-4)
    cache.rollback(0, 2)  # two rejected drafts
    rows[0] = rows[0][:-2]
    cache.free(3)  # row 3 finished; a longer newcomer takes its slot
    rows[3] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    logits = cache.append([3, 0, 2], [rows[3], [21], [22]])[:, -1]
    rows[0], rows[2] = rows[0] + [21], rows[2] + [22]
    for i, slot in enumerate((3, 0, 2)):
        assert torch.allclose(logits[i], reference_logits(model, rows[slot]), atol=1e-4)
    assert cache.lengths == [len(rows[0]), 0, len(rows[2]), len(rows[3])]


def test_a_slot_without_room_is_refused(model):
    cache = SlotCache(model, 1, 4, pad_id=0)
    cache.append([0], [[1, 2, 3]])
    with pytest.raises(ValueError, match="no room left"):
        cache.append([0], [[4, 5]])


@pytest.fixture(scope="module")
def pair(tiny_pair):
    from ownwords.models.loading import load_pair

    teacher, student = tiny_pair
    return load_pair(str(teacher), str(student), "cpu", "float32")


def requests(models, n, lengths=None):
    from ownwords.data.questions import build_prompt

    tok = models[1]
    return [
        Request(f"q{i}", i, build_prompt(tok, f"What is {i} + {i * 3}?" * (1 + i % 3), prefix="<think>\n"), seed=i,
                max_new_tokens=(lengths or {}).get(i))
        for i in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize("k", [0, 2])
def test_no_decode_step_concatenates_a_kv_cache(pair, monkeypatch, k):
    student, s_tok, teacher, alignment = pair
    seen = []
    cat = torch.cat

    def counting(tensors, dim=0, *args, **kwargs):
        # a KV cache [B, H, L, D] grows along its sequence axis (DynamicCache: dim=-2); rotary
        # embeddings concatenate the halves of the new tokens' q/k along the last one, which is fine
        if dim in (2, -2) and any(isinstance(t, torch.Tensor) and t.dim() == 4 for t in tensors):
            seen.append(dim)
        return cat(tensors, dim, *args, **kwargs)

    monkeypatch.setattr(torch, "cat", counting)
    engine = Engine(student, s_tok, teacher, alignment, Sampling(1.0, 0, 1.0), max_new_tokens=12, batch_size=3, speculate=k)
    traces = list(engine.run(requests(pair, 5)))
    assert len(traces) == 5 and sum(len(t.token_ids) for t in traces) > 20
    assert seen == [], "a KV cache [B, H, L, D] was concatenated along its sequence axis"


@pytest.mark.parametrize("k", [0, 2])
def test_a_row_admitted_into_a_slot_freed_mid_run_gives_the_tokens_it_gives_alone(pair, k):
    """Request 0 stops after 2 tokens while 1 runs on: 2 takes 0's slot mid-run, next to 1."""
    student, s_tok, teacher, alignment = pair

    def engine(batch):
        return Engine(student, s_tok, teacher, alignment, Sampling(1.0, 0, 1.0), max_new_tokens=16,
                      batch_size=batch, speculate=k)  # fmt: skip

    reqs = requests(pair, 3, lengths={0: 2})
    first = engine(2)
    together = {t.request.sample_index: t for t in first.run(reqs)}
    for r in reqs:
        alone = next(engine(1).run([r]))
        assert together[r.sample_index].token_ids == alone.token_ids, f"request {r.sample_index}"
        assert together[r.sample_index].fallbacks == alone.fallbacks
    assert len(together[0].token_ids) == 2 and len(together[2].token_ids) > 2


def test_a_layout_that_cannot_fit_is_refused_before_any_work(pair, monkeypatch):
    from ownwords.decoding import slots

    student, s_tok, teacher, alignment = pair
    monkeypatch.setattr(slots, "free_memory", lambda device: 10 * 2**20)  # a 10 MiB device
    engine = Engine(student, s_tok, teacher, alignment, max_new_tokens=7168, max_length=8192, batch_size=64)
    needs = engine.kv_bytes()  # rows x (the longest prompt + max_new_tokens, under max_length) x bytes per token
    assert set(needs) == {"student", "teacher"} and sum(needs.values()) > 10 * 2**20
    reqs = requests(pair, 1)
    room = min(8192, len(reqs[0].prompt_ids) + 7168)
    with pytest.raises(UserError, match=rf"the KV cache needs .* GiB .* 64 rows x {room} tokens.* lower batch_size or max_length"):
        next(engine.run(reqs))


def test_attention_reads_live_keys_and_says_how_many(pair):
    student, s_tok, teacher, alignment = pair
    engine = Engine(student, s_tok, None, None, Sampling(1.0, 0, 1.0), max_new_tokens=24, batch_size=4)
    list(engine.run(requests(pair, 8)))
    stats = engine.cache_stats()
    assert stats["live"] > 0 and stats["live"] <= stats["attended"] <= 1.5 * stats["live"]
    assert stats["kv_bytes"] == engine.kv_bytes(max(len(r.prompt_ids) for r in requests(pair, 8)))["student"]


def test_load_model_by_path_and_stop_ids(tiny_pair):
    _, student = tiny_pair
    model, tok = load_model(str(student), "cpu", "float32")
    assert stop_token_ids(model, tok) == {tok.eos_token_id, tok.pad_token_id}
    assert not model.training
