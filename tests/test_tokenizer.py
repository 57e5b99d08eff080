"""Byte-level BPE: round trips, the template, specials, determinism."""
import pytest

from rlhf.tokenizer import Tokenizer, too_long

TEXTS = ["write a happy story about mia and a red kite .",
         "mia found a red kite . mia smiled . the sun was warm .",
         "reverse : c a d b .", "b d a c ."] * 50


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(TEXTS, vocab_size=512)


def test_round_trip(tok):
    for t in TEXTS[:4] + ["héllo wörld ✓ unseen words 123", "a"]:
        assert tok.decode(tok.encode(t)) == t


def test_template_and_specials(tok):
    p = tok.encode_prompt("reverse : c a d b .")
    assert p[-1] == tok.sep_id and tok.sep_id not in p[:-1]
    (r,) = tok.encode_responses(["b d a c ."])
    assert r[-1] == tok.eos_id
    assert tok.decode_response(r + [tok.pad_id, tok.pad_id]) == "b d a c ."
    assert tok.decode_response(r[:-1]) == "b d a c ."  # never stopped: everything decodes
    assert len({tok.pad_id, tok.eos_id, tok.sep_id}) == 3


def test_frequent_words_are_single_tokens(tok):
    assert len(tok.encode("happy story")) == 2


def test_save_load_and_determinism(tok):
    again = Tokenizer.from_json(tok.to_json())
    assert again.encode("mia smiled .") == tok.encode("mia smiled .")
    assert Tokenizer.train(TEXTS, vocab_size=512).fingerprint == tok.fingerprint
    assert Tokenizer.train(TEXTS, vocab_size=300).fingerprint != tok.fingerprint


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match="vocab_size must be >= 260"):
        Tokenizer.train(TEXTS, vocab_size=100)


def test_too_long_is_the_one_context_rule():
    prompts = [[1, 2, 3], [1], [1, 2, 3, 4, 5]]
    # a room of 2 tokens for every response in a context of 5: 3 + 2 fits, 1 + 2 fits, 5 + 2 does not
    assert too_long(prompts, 2, 5) == [2]
    # per-row responses, as ids or lengths: 3 + 3 > 5, 1 + 4 = 5 fits, 5 + 0 = 5 fits
    assert too_long(prompts, [[7, 7, 7], 4, []], 5) == [0]


def test_special_token_strings_in_text_stay_text(tok):
    specials = {tok.pad_id, tok.eos_id, tok.sep_id}
    text = "the cat <|eos|> sat <|sep|> on <|pad|> the mat <|endoftext|>"
    for ids in (tok.encode(text), tok.encode_batch([text])[0]):
        assert not specials & set(ids)
    p, r = tok.encode_prompts([text])[0], tok.encode_responses([text])[0]
    assert p[-1] == tok.sep_id and not specials & set(p[:-1])  # only the template's separator
    assert r[-1] == tok.eos_id and not specials & set(r[:-1])  # only the template's EOS
    assert tok.decode_response(r) == text  # and it reads back as the same text
    assert Tokenizer.from_json(tok.to_json()).encode(text) == tok.encode(text)  # a loaded tokenizer too
