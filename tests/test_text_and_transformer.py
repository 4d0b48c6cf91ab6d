"""Text corpus parsing/splitting/tokenisation and the reference transformer's structure
(causality, padding, rotary relative positions, time conditioning)."""

import pytest
import torch

from benchmarks.text_data import kjv_path, load_kjv, parse_kjv
from dfm.corpus import Corpus, eval_chunks, random_crops, tokenize_corpus, train_bpe
from dfm.transformer import TokenTransformer, apply_rotary

SNIPPET = """
Genesis 1

  1 In the beginning God created the heaven and the earth.
  2 And the earth was without form, and void; and darkness was upon the face of
the deep. And the Spirit of God moved upon the face of the waters.

Genesis 2

  1 Thus the heavens and the earth were finished,
and all the host of them.

1 Kings 3

  10 And the speech pleased the Lord.
"""


def test_parse_kjv_strips_headings_and_numbers_and_joins_lines():
    chapters = parse_kjv(SNIPPET)
    assert chapters == [
        [
            "In the beginning God created the heaven and the earth.",
            "And the earth was without form, and void; and darkness was upon the face of the deep. "
            "And the Spirit of God moved upon the face of the waters.",
        ],
        ["Thus the heavens and the earth were finished, and all the host of them."],
        ["And the speech pleased the Lord."],
    ]
    with pytest.raises(ValueError, match="continuation line outside a verse"):
        parse_kjv("\nGenesis 1\n\nstray text\n")


@pytest.mark.skipif(
    not kjv_path().exists(), reason="KJV text not available (set RDFM_DATA_DIR to a folder with text/kjv.txt)"
)
def test_real_corpus_split_is_deterministic_and_disjoint():
    a, b = load_kjv(), load_kjv()
    assert a.train == b.train and a.test == b.test
    total = len(a.train) + len(a.val) + len(a.test)
    assert 0.85 < len(a.train) / total < 0.95 and 0.03 < len(a.test) / total < 0.07
    assert "Genesis 1" not in a.train and "  1 In" not in a.train
    assert a.train.startswith("In the beginning God created")
    # chapter-level split: Genesis 11 (chapter index 10) is test, Genesis 6 (index 5) validation
    assert a.test.startswith("And the whole earth was of one language")
    assert a.val.startswith("And it came to pass, when men began to multiply")
    assert a.decode(a.encode(a.test[:500])) == a.test[:500]


def test_char_vocab_roundtrip_crops_and_chunks():
    c = Corpus(train="abcab\n", val="ba\n", test="cab\n", chars="\nabc")
    ids = c.encode("cab\n")
    assert ids.tolist() == [3, 1, 2, 0] and c.decode(ids) == "cab\n"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        c.encode("z")
    data = torch.arange(100)
    crops = random_crops(data, 5, 10, torch.Generator().manual_seed(0))
    assert crops.shape == (5, 10) and bool((crops.diff(dim=1) == 1).all())
    chunks = eval_chunks(data, 30)
    assert chunks.shape == (3, 30) and torch.equal(chunks.flatten(), data[:90])


def test_bpe_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("RDFM_CACHE_DIR", str(tmp_path))
    text = "And God said, Let there be light: and there was light.\n" * 50
    tok = train_bpe(Corpus(train=text, val="", test="", chars=""), vocab_size=300)
    enc = tok.encode("And there was light.")
    assert tok.decode(enc.ids) == "And there was light."
    assert len(enc.ids) < len("And there was light.")
    assert any(p.name.startswith("bpe_300_") for p in tmp_path.iterdir())
    # another training text never reuses the cached merges
    other = train_bpe(Corpus(train="zebra quartz " * 200, val="", test="", chars=""), vocab_size=300)
    assert other.get_vocab() != tok.get_vocab()


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_token_streams_count_characters_exactly(kind, tmp_path, monkeypatch):
    monkeypatch.setenv("RDFM_CACHE_DIR", str(tmp_path))
    verses = ["In the beginning God created the heaven and the earth.", "And the earth was without form, and void;"]
    train = "\n".join(verses * 40) + "\n"
    test = "And God said, Let there be light: and there was light.\n"
    corpus = Corpus(train=train, val=train[:200], test=test, chars="".join(sorted(set(train + test))))
    streams = tokenize_corpus(corpus, kind, bpe_vocab_size=300)
    assert streams.decode(streams.test) == test and streams.decode(streams.train) == train
    assert streams.n_chars(streams.test) == len(test) and streams.n_chars(streams.train) == len(train)
    assert streams.chars_per_token.shape == (streams.vocab_size,)
    if kind == "bpe":
        assert len(streams.train) < len(train) / 2  # merges learned on the repetitive text
    with pytest.raises(ValueError, match="tokenizer"):
        tokenize_corpus(corpus, "words")


def small(causal=False, time=True, positions="rotary"):
    torch.manual_seed(0)
    m = TokenTransformer(
        11, 10, width=32, depth=2, heads=4, max_len=16, causal=causal, time_conditioning=time, positions=positions
    ).double()
    if time:  # adaLN-Zero starts t-independent: give the modulation weights some values
        for block in m.blocks:
            torch.nn.init.normal_(block.modulation.weight, std=0.05)
    return m.eval()


def test_causal_model_ignores_future_tokens_bidirectional_does_not():
    x = torch.randint(0, 11, (3, 12))
    y = x.clone()
    y[:, 7:] = (y[:, 7:] + 1) % 11
    ar = small(causal=True, time=False)
    torch.testing.assert_close(ar(x)[:, :7], ar(y)[:, :7])
    assert not torch.allclose(ar(x)[:, 7:], ar(y)[:, 7:])
    bi = small()
    t = torch.full((3,), 0.5)
    assert not torch.allclose(bi(x, t)[:, :7], bi(y, t)[:, :7])


def test_padding_positions_do_not_affect_the_others():
    m = small()
    x = torch.randint(0, 11, (2, 10))
    pad = torch.zeros_like(x, dtype=torch.bool)
    pad[:, 8:] = True
    y = x.clone()
    y[:, 8:] = (y[:, 8:] + 3) % 11
    t = torch.tensor([0.2, 0.7])
    torch.testing.assert_close(m(x, t, padding_mask=pad)[:, :8], m(y, t, padding_mask=pad)[:, :8])
    causal = small(causal=True, time=False)
    torch.testing.assert_close(causal(x, padding_mask=pad)[:, :8], causal(y, padding_mask=pad)[:, :8])


def test_rotary_scores_depend_only_on_relative_position():
    from dfm.transformer import _RotaryCache

    rope = _RotaryCache(8)
    cos, sin = rope(torch.arange(20), torch.float64)
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    qs = apply_rotary(q.expand(20, 8), cos, sin)
    ks = apply_rotary(k.expand(20, 8), cos, sin)
    torch.testing.assert_close(qs[3] @ ks[7], qs[10] @ ks[14])
    assert abs(float(qs[3] @ ks[7] - qs[3] @ ks[8])) > 1e-6
    torch.testing.assert_close(qs.norm(dim=-1), q.norm().expand(20))


def test_rotary_table_matches_the_closed_form_inside_and_past_it():
    """Positions below the table's length are table rows, later ones computed: both equal
    cos/sin(position * base^(-2i/d)) to float64 rounding, and a model's output does not change
    where the table ends (a sequence longer than max_len with rotary positions)."""
    from dfm.transformer import _RotaryCache

    rope = _RotaryCache(8, table_len=16)
    positions = torch.tensor([0, 5, 15, 16, 17, 40, 3, -3, -20])
    cos, sin = rope(positions, torch.float64)
    freq = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    angles = positions.double()[:, None] * freq
    torch.testing.assert_close(cos, torch.cos(angles), rtol=0, atol=1e-15)
    torch.testing.assert_close(sin, torch.sin(angles), rtol=0, atol=1e-15)
    c32, s32 = rope(positions, torch.float32)
    assert c32.dtype == s32.dtype == torch.float32
    # a model cast to bf16 keeps the angles past its table (frequencies rebuilt in float64): only
    # the bf16 rounding of cos remains (a bf16 frequency put 0.4 into cos at position 1000)
    c16, _ = rope.to(torch.bfloat16)(torch.tensor([1000]), torch.float64)
    torch.testing.assert_close(c16, torch.cos(1000 * freq)[None], rtol=0, atol=8e-3)  # bf16 rounding only
    torch.manual_seed(0)
    short = TokenTransformer(
        11, 10, width=16, depth=1, heads=2, max_len=8, causal=True, time_conditioning=False
    ).double()
    long = TokenTransformer(
        11, 10, width=16, depth=1, heads=2, max_len=64, causal=True, time_conditioning=False
    ).double()
    long.load_state_dict(short.state_dict())
    x = torch.randint(0, 11, (2, 20))
    torch.testing.assert_close(short(x), long(x), rtol=1e-12, atol=1e-12)


def test_time_conditioning_batch_dims_dtypes_and_errors():
    m = small()
    x = torch.randint(0, 11, (2, 3, 10))
    out = m(x, torch.full((2, 3), 0.3))
    assert out.shape == (2, 3, 10, 10) and out.dtype == torch.float64
    torch.testing.assert_close(out[1, 2], m(x[1, 2][None], torch.tensor([0.3]))[0])
    assert not torch.allclose(m(x, 0.1), m(x, 0.9))
    with pytest.raises(ValueError, match="pass t"):
        m(x)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 11\)"):
        m(torch.full((1, 4), 11), 0.5)
    with pytest.raises(ValueError, match="exceeds max_len"):
        small(positions="learned")(torch.zeros(1, 20, dtype=torch.long), 0.5)
