import torch
from transformers import AutoModelForCausalLM

from ownwords.decoding.cache import CachedBatch
from ownwords.models.facts import stop_token_ids
from ownwords.models.loading import load_model


def reference_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].float()


def test_ragged_appends_select_and_extend_match_each_row_alone(tiny_pair):
    teacher, _ = tiny_pair
    model = AutoModelForCausalLM.from_pretrained(teacher).eval()
    rows = [[5, 9, 33], [7, 8, 9, 10, 11], [40]]
    state = CachedBatch(model, pad_id=0)
    state.append(rows)
    blocks = [[12], [13, 14, 15], []]  # ragged: one row gets three tokens, one none
    logits = state.append(blocks)[:, -1]
    full = [r + b for r, b in zip(rows, blocks)]
    for i in (0, 1):
        assert torch.allclose(logits[i], reference_logits(model, full[i]), atol=1e-4)
    state.select(torch.tensor([1, 0]))  # row 2 finished; order changes too
    late = CachedBatch(model, pad_id=0)
    late.append([[3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])  # a longer newcomer refills the slot
    state.extend(late)
    logits = state.append([[20], [21], [22]])[:, -1]
    expected = [full[1] + [20], full[0] + [21], [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 22]]
    for i, ids in enumerate(expected):
        assert torch.allclose(logits[i], reference_logits(model, ids), atol=1e-4)
    assert state.next_pos.tolist() == [len(e) for e in expected]


def test_select_drops_columns_no_row_uses(tiny_pair):
    _, student = tiny_pair
    model = AutoModelForCausalLM.from_pretrained(student).eval()
    state = CachedBatch(model, pad_id=0)
    state.append([[1, 2, 3, 4, 5, 6], [7]])
    state.select(torch.tensor([1]))
    assert state.mask.shape == (1, 1) and state.cache.get_seq_length() == 1


def test_load_model_by_path_and_stop_ids(tiny_pair):
    _, student = tiny_pair
    model, tok = load_model(str(student), "cpu", "float32")
    assert stop_token_ids(model, tok) == {tok.eos_token_id, tok.pad_token_id}
    assert not model.training


def test_rollback_and_compaction_keep_each_row_exact(tiny_pair):
    _, student = tiny_pair
    model = AutoModelForCausalLM.from_pretrained(student).eval()
    state = CachedBatch(model, pad_id=0)
    rows = [[5, 9, 33], [7, 8]]
    state.append(rows)
    for step in range(40):  # each round: 4 drafts; the rows take turns keeping 1 and all 4
        state.append([[10 + step, 11, 12, 13], [20 + step, 21, 22, 23]], keep=4)
        drop = [3, 0] if step % 2 else [0, 3]
        state.rollback(drop)
        rows = [
            rows[0] + [10 + step, 11, 12, 13][: 4 - drop[0]],
            rows[1] + [20 + step, 21, 22, 23][: 4 - drop[1]],
        ]
    assert state.compactions > 0  # the holes were squeezed out along the way
    assert state.next_pos.tolist() == [len(r) for r in rows]
    logits = state.append([[99], [98]])[:, -1]
    assert torch.allclose(logits[0], reference_logits(model, rows[0] + [99]), atol=1e-4)
    assert torch.allclose(logits[1], reference_logits(model, rows[1] + [98]), atol=1e-4)
