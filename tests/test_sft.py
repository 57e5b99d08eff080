"""SFT batch layout and loss against hand values."""
import math

import pytest
import torch

from rlhf.sft import join_prompt_response, sft_loss


def test_join_prompt_response_layout():
    ids, mask, rmask = join_prompt_response([[5, 6], [7]], [[8, 1], [9, 10, 1]], pad_id=0)
    assert ids.tolist() == [[5, 6, 8, 1], [7, 9, 10, 1]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    assert rmask.tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]
    ids, mask, rmask = join_prompt_response([[5, 6, 7]], [[1]], pad_id=0)
    ids2, mask2, rmask2 = join_prompt_response([[5, 6, 7], [2]], [[1], [3]], pad_id=0)
    assert ids2[1].tolist() == [2, 3, 0, 0] and mask2[1].tolist() == [1, 1, 0, 0] and rmask2[1].tolist() == [0, 1, 0, 0]


def test_sft_loss_uniform_logits_is_log_vocab():
    # all-zero logits over V = 10: every token costs ln 10 = 2.302585, whatever the mask selects
    ids, _, rmask = join_prompt_response([[5, 6]], [[7, 1]], pad_id=0)
    assert sft_loss(torch.zeros(1, 4, 10), ids, rmask).item() == pytest.approx(math.log(10), abs=1e-6)


def test_sft_loss_ignores_prompt_and_padding():
    # row: prompt [5, 6], response [7, 1]; logits put all mass on the right response tokens
    ids, _, rmask = join_prompt_response([[5, 6], [5]], [[7, 1], [7]], pad_id=0)
    logits = torch.full((2, 4, 10), -1e4)
    logits[0, 1, 7] = logits[0, 2, 1] = 0.0  # positions 1, 2 predict response tokens 7, 1: loss 0
    logits[1, 0, 7] = 0.0                    # row 1: position 0 predicts its one response token
    # the prompt's own next token (6 after 5 at position 0 of row 0) is badly predicted but not counted
    assert sft_loss(logits, ids, rmask).item() == pytest.approx(0.0, abs=1e-5)
