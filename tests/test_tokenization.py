"""Tokenizers: char (BERT WordPiece), word (WoBERT over jieba), pretrained; word ids and metrics. Real parts, no mocks."""

from __future__ import annotations

import json
import random
import string

import pytest
from shared_data import shared_data_dir
from transformers import AutoTokenizer, BertTokenizerFast

from zhnlp.text.tokenization import META_FILE, TokenizerError, is_cjk_word, load_tokenizer, save_tokenizer, segment_words, split_cjk
from zhnlp.text.tokenizer_training import add_words, build_tokenizer, measure, select_words, train_char_tokenizer

TEXTS = [
    "我们在公园里playing football，大家都很开心。",
    "他们played basketball昨天晚上。",
    "player和players都来了",
    "今天天气很好，我们去打球吧！",
    "研究生命的起源是一个有趣的问题",
    "中华人民共和国成立于1949年",
    "王老师买了iPhone手机和T恤",
] * 3


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("char")
    build_tokenizer({"mode": "char", "vocab_size": 200, "min_frequency": 2, "lowercase": True}, TEXTS, out)
    return out


@pytest.fixture(scope="module")
def word_dir(tmp_path_factory):
    """A word tokenizer with a hand-picked word vocab, so that greedy matching and WoBERT disagree."""
    out = tmp_path_factory.mktemp("word")
    hf = train_char_tokenizer(TEXTS, vocab_size=200, min_frequency=2, lowercase=True)
    add_words(hf, ["研究生", "生命", "人民", "起源", "公园"])
    save_tokenizer(hf, out, "word", lowercase=True, words=5)
    return out


def test_char_mode_splits_cjk_into_characters_and_wordpieces_latin(char_dir):
    tok = load_tokenizer(char_dir)
    assert tok.mode == "char"
    assert tok.tokenize("研究生命的起源") == list("研究生命的起源")
    assert tok.tokenize("我们plays") == ["我", "们", "play", "##s"]
    assert tok.tokenize("PLAYING") == ["playing"]  # lowercased
    ids = tok.encode_batch(["我们"])[0]
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id and len(ids) == 4
    assert tok.hf.convert_ids_to_tokens([tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # special-token strings inside the text are text, not control tokens
    ids = tok.encode_batch(["我们[MASK][SEP]"])[0]
    assert tok.mask_id not in ids and ids.count(tok.sep_id) == 1


@pytest.mark.parametrize("which", ["char", "word"])
def test_autotokenizer_loads_the_saved_directory(which, char_dir, word_dir):
    folder = {"char": char_dir, "word": word_dir}[which]
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    assert meta["mode"] == which
    auto = AutoTokenizer.from_pretrained(str(folder))
    assert auto.is_fast and isinstance(auto, BertTokenizerFast)
    tok = load_tokenizer(folder)
    text = "研究生命的起源，我们playing football"
    if which == "char":
        assert auto(text)["input_ids"] == tok.encode_batch([text])[0]
    else:  # word mode: AutoTokenizer on the pre-segmented pieces gives exactly our ids, [CLS]/[SEP] included
        pieces, _ = tok.pieces(text)
        ids = auto(pieces, is_split_into_words=True)["input_ids"]
        assert ids == tok.encode_batch([text])[0]
        assert ids[0] == auto.cls_token_id and ids[-1] == auto.sep_token_id


def test_word_mode_is_wobert_not_greedy_matching(word_dir):
    tok = load_tokenizer(word_dir)
    assert segment_words("研究生命的起源") == ["研究", "生命", "的", "起源"]
    # jieba: 研究/生命/的/起源. "研究" is not a vocab word -> characters; greedy matching would take "研究生".
    assert tok.tokenize("研究生命的起源") == ["研", "究", "生命", "的", "起源"]
    assert tok.hf.tokenize("研究生命的起源") == ["研究生", "命", "的", "起源"]  # what raw text would give
    # An out-of-vocab word falls back to characters, never to the vocab word inside it ("人民").
    assert segment_words("中华人民共和国成立")[0] == "中华人民共和国"
    assert tok.tokenize("中华人民共和国成立")[:7] == list("中华人民共和国")
    assert tok.tokenize("我们的人民") == ["我", "们", "的", "人民"]
    # Latin stays WordPiece; mixed jieba words ("T恤") split into their non-CJK run and characters.
    assert tok.tokenize("王老师买了iPhone和T恤") == ["王", "老", "师", "买", "了", "iphone", "和", "t", "恤"]


def test_word_mode_added_tokens_only_match_whole_pieces(word_dir):
    auto = AutoTokenizer.from_pretrained(str(word_dir))
    enc = auto(["研究生", "命"], is_split_into_words=True)
    assert auto.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", "研究生", "命", "[SEP]"]
    enc = auto(["研", "究", "生命"], is_split_into_words=True)
    assert auto.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", "研", "究", "生命", "[SEP]"]


def test_word_ids_on_a_known_sentence(char_dir, word_dir):
    char, word = load_tokenizer(char_dir), load_tokenizer(word_dir)
    ids, wids = char.encode_batch_with_word_ids(["研究生命的起源"])
    assert char.hf.convert_ids_to_tokens(ids[0]) == ["[CLS]", *"研究生命的起源", "[SEP]"]
    assert wids[0] == [-1, 0, 0, 1, 1, 2, 3, 3, -1]  # 研究 / 生命 / 的 / 起源
    ids, wids = word.encode_batch_with_word_ids(["研究生命的起源"])
    assert word.hf.convert_ids_to_tokens(ids[0]) == ["[CLS]", "研", "究", "生命", "的", "起源", "[SEP]"]
    assert wids[0] == [-1, 0, 0, 1, 2, 3, -1]
    # WordPiece pieces of one Latin word share its id; ids equal the plain encoding's ids.
    ids, wids = char.encode_batch_with_word_ids(["我们plays了"], add_special_tokens=False)
    assert char.hf.convert_ids_to_tokens(ids[0]) == ["我", "们", "play", "##s", "了"]
    assert wids[0] == [0, 0, 1, 1, 2]
    assert ids == char.encode_batch(["我们plays了"], add_special_tokens=False)


def test_training_is_deterministic():
    # Many Latin words with tied pair counts: tokenizers' own trainer gives a different vocab on most runs
    # (huggingface/tokenizers#1794); ours must give the same tokenizer.json every time.
    rng = random.Random(0)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8))) for _ in range(300)]
    texts = [" ".join(words[i : i + 10]) + "，今天天气很好" for i in range(0, 300, 10)] * 2
    runs = {train_char_tokenizer(texts, vocab_size=400, min_frequency=2).backend_tokenizer.to_str() for _ in range(5)}
    assert len(runs) == 1
    with pytest.raises(TypeError, match="read twice"):
        train_char_tokenizer(iter(texts), vocab_size=400)
    assert train_char_tokenizer(lambda: iter(texts), vocab_size=400).backend_tokenizer.to_str() in runs


def test_word_vocab_selection():
    counts = {"研究": 5, "生命": 3, "起源": 2, "的": 9, "iphone": 7, "T恤": 6, "人民": 3}
    assert select_words(counts, 10, 3) == ["研究", "人民", "生命"]  # by count, ties by word; CJK multi-char only
    assert select_words(counts, 1, 1) == ["研究"]
    assert is_cjk_word("研究") and not is_cjk_word("的") and not is_cjk_word("T恤")
    assert split_cjk("T恤2千元") == ["T", "恤", "2", "千", "元"]


def test_trained_word_tokenizer_adds_frequent_jieba_words(tmp_path):
    texts = ["研究生命的起源", "我们研究天气", "研究问题", "天气很好"]
    info = build_tokenizer(
        {"mode": "word", "vocab_size": 100, "min_frequency": 1, "lowercase": True, "words": 10, "min_word_frequency": 2}, texts, tmp_path
    )
    tok = load_tokenizer(tmp_path)
    assert info["words"] == 2 and info["vocab_size"] == info["char_vocab_size"] + 2 == tok.vocab_size
    assert tok.tokenize("研究天气的起源") == ["研究", "天气", "的", "起", "源"]


def test_unk_rate_and_tokens_per_char(char_dir):
    tok = load_tokenizer(char_dir)
    m = measure(tok, ["研究生命", "火星", "plays"]).metrics()  # 火星 unseen: 2 [UNK]; plays -> play ##s
    assert m == {
        "texts": 3,
        "chars": 11,
        "tokens": 8,
        "unk_tokens": 2,
        "unk_rate": 2 / 8,
        "tokens_per_char": 8 / 11,
        "max_tokens_per_text": 4,
    }


def test_pretrained_mode_copies_a_local_tokenizer(tmp_path):
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"我们研究生命", "play", "##s"])}
    ckpt = tmp_path / "ckpt"
    BertTokenizerFast(vocab=vocab, do_lower_case=True).save_pretrained(str(ckpt))
    out = tmp_path / "out"
    info = build_tokenizer({"mode": "pretrained", "path": str(ckpt)}, None, out)
    assert info == {"mode": "pretrained", "vocab_size": len(vocab)}
    tok = load_tokenizer(out)
    assert tok.mode == "pretrained"
    assert tok.hf.convert_ids_to_tokens(tok.encode_batch(["我们plays"])[0]) == ["[CLS]", "我", "们", "play", "##s", "[SEP]"]
    assert AutoTokenizer.from_pretrained(str(out))("研究")["input_ids"] == [2, 7, 8, 3]
    _, wids = tok.encode_batch_with_word_ids(["研究生命"])
    assert wids[0] == [-1, 0, 0, 1, 1, -1]

    with pytest.raises(TokenizerError, match="does not exist"):
        build_tokenizer({"mode": "pretrained", "path": str(tmp_path / "missing")}, None, tmp_path / "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="no tokenizer files"):
        build_tokenizer({"mode": "pretrained", "path": str(tmp_path / "empty")}, None, tmp_path / "y")
    with pytest.raises(TokenizerError, match="mode must be one of"):
        build_tokenizer({"mode": "bpe"}, [], tmp_path / "z")


@pytest.mark.shared_data
def test_char_tokenizer_on_real_tnews(tmp_path):
    tnews = shared_data_dir() / "clue" / "tnews"

    def sentences(name):
        with open(tnews / name, encoding="utf-8") as fh:
            return [json.loads(line)["sentence"] for line in fh if line.strip()]

    train, dev = sentences("train_few_all.json"), sentences("dev_few_all.json")
    build_tokenizer({"mode": "char", "vocab_size": 8000, "min_frequency": 2, "lowercase": True}, train, tmp_path)
    tok = load_tokenizer(tmp_path)
    on_train, on_dev = measure(tok, train).metrics(), measure(tok, dev).metrics()
    assert on_train["unk_tokens"] == 0  # every training character is in the alphabet
    assert on_dev["unk_rate"] <= 0.05  # 1,185 training sentences: unseen rare characters only (2.9% measured)
    assert 0.9 <= on_dev["tokens_per_char"] <= 1.0  # one token per CJK character, fewer for Latin words and numbers


def test_word_ids_from_offsets_keep_wordpieces_and_split_long_pretokens():
    from zhnlp.text.tokenization import _char_mode_word_ids

    # WordPiece: "play ##s" is one jieba word; jieba cuts "café" as caf|é but BERT's "caf ##e" stays one word
    assert _char_mode_word_ids(["我们", "plays", "了"], ["我", "们", "play", "##s", "了"], [0, 1, 2, 2, 3], [(0, 1), (1, 2), (2, 6), (6, 7), (7, 8)], "##") == [0, 0, 1, 1, 2]
    assert _char_mode_word_ids(["caf", "é", "好"], ["caf", "##e", "好"], [0, 0, 1], [(0, 3), (3, 4), (4, 5)], "##") == [0, 0, 1]
    # byte-level BPE: one pre-token spans the clause; tokens still group by the jieba word they start in
    words = ["研究", "生命", "的", "起源"]
    assert _char_mode_word_ids(words, ["研究", "生命", "的", "起", "源"], [0] * 5, [(0, 2), (2, 4), (4, 5), (5, 6), (6, 7)], None) == [0, 1, 2, 3, 3]
    assert _char_mode_word_ids(words, ["研究生", "命的", "起源"], [0] * 3, [(0, 3), (3, 5), (5, 7)], None) == [0, 0, 1]


def test_vocab_size_follows_added_tokens_and_save_rewrites_the_meta(word_dir, tmp_path):
    """ZhTokenizer.vocab_size is read live; ZhTokenizer.save keeps mode and settings and records the new size."""
    tok = load_tokenizer(word_dir)
    before = tok.vocab_size
    assert before == len(tok.hf)
    tok.hf.add_tokens(["_", "[", "]", "新词甲"])
    assert tok.vocab_size == len(tok.hf) > before
    tok.save(tmp_path / "saved")
    meta = json.loads((tmp_path / "saved" / META_FILE).read_text(encoding="utf-8"))
    assert meta["mode"] == "word" and meta["lowercase"] is True and meta["words"] == 5
    assert meta["vocab_size"] == tok.vocab_size and meta["segmenter"]["name"] == "jieba"
    again = load_tokenizer(tmp_path / "saved")
    assert again.mode == "word" and again.vocab_size == tok.vocab_size
    assert again.tokenize("研究生命的起源") == tok.tokenize("研究生命的起源")
