"""Tests for the demo CMRC2018, C3, CHID and CLUENER corpora: determinism, official shapes, offsets, hardness."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from demo.common import rng_for
from demo.reading import CHID_TOPICS, NER_TYPES, cluener_row, write_reading

SPLITS = ("train", "dev", "test")
TAG = re.compile(r"#idiom\d{6}#")


@pytest.fixture(scope="module")
def clue(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("reading") / "clue"
    return out, write_reading(out, seed=0)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def cmrc_rows(root: Path, split: str) -> list[dict]:
    doc = json.loads((root / "cmrc2018" / f"{split}.json").read_text(encoding="utf-8"))
    return [{"id": qa["id"], "context": p["context"], "question": qa["question"],
             "answers": [a["text"] for a in qa.get("answers", [])],
             "answer_starts": [a["answer_start"] for a in qa.get("answers", [])], "has_answers": "answers" in qa}
            for art in doc["data"] for p in art["paragraphs"] for qa in p["qas"]]


def c3_rows(root: Path, split: str) -> list[dict]:
    rows = []
    for kind in "dm":
        for lines, questions, pid in json.loads((root / "c3" / f"c3-{kind}-{split}.json").read_text(encoding="utf-8")):
            rows += [{"id": f"{pid}-{i}", "passage": "\n".join(lines), "question": q["question"],
                      "choices": q["choice"], "label_id": q["choice"].index(q["answer"])}
                     for i, q in enumerate(questions)]
    return rows


def chid_rows(root: Path, split: str) -> list[dict]:
    answer_path = root / "chid" / f"{split}_answer.json"
    answers = json.loads(answer_path.read_text(encoding="utf-8")) if answer_path.exists() else {}
    rows = []
    for n, line in enumerate(read_jsonl(root / "chid" / f"{split}.json")):
        for passage in line["content"]:
            for tag in TAG.findall(passage):
                text = TAG.sub(lambda m: "#idiom#" if m.group(0) == tag else "#other#", passage)
                rows.append({"id": tag, "text": text, "candidates": line["candidates"],
                             "label_id": answers.get(tag), "group": f"{split}:{n}"})
    return rows


def ner_rows(root: Path, split: str) -> list[dict]:
    return [{"text": r["text"], "entities": [{"type": t, "start": s, "end": e, "text": name}
                                             for t, ents in r.get("label", {}).items()
                                             for name, spans in ents.items() for s, e in spans]}
            for r in read_jsonl(root / "cluener" / f"{split}.json")]


# --- determinism and counts -------------------------------------------------

def test_same_seed_identical_bytes_other_seed_differs(tmp_path, clue):
    first, _ = clue
    write_reading(tmp_path / "again", seed=0)
    write_reading(tmp_path / "other", seed=1)
    a, b, c = tree_bytes(first), tree_bytes(tmp_path / "again"), tree_bytes(tmp_path / "other")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a)


def test_counts_are_lines_and_documented_sizes(clue):
    out, counts = clue
    assert set(counts) == {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    for rel, n in counts.items():
        assert n == len((out / rel).read_text(encoding="utf-8").splitlines()), rel
    assert [counts[f"cmrc2018/{s}.json"] for s in SPLITS] == [240, 60, 30]
    assert [counts[f"c3/c3-{k}-{s}.json"] for s in SPLITS for k in "dm"] == [100, 100, 30, 30, 30, 30]
    assert [counts[f"chid/{s}_answer.json"] for s in ("train", "dev")] == [240, 60]
    assert len(chid_rows(out, "test")) == 40 and "chid/test_answer.json" not in counts
    assert [counts[f"cluener/{s}.json"] for s in SPLITS] == [300, 80, 40]


def test_scale_shrinks_every_file_to_at_least_eight_rows(tmp_path):
    counts = write_reading(tmp_path, seed=0, scale=0.01)
    assert counts["cmrc2018/train.json"] == 8 and counts["cluener/dev.json"] == 8
    assert len(chid_rows(tmp_path, "test")) == 8


# --- CMRC2018 ---------------------------------------------------------------

def test_cmrc2018_squad_shape_and_offsets(clue):
    out, _ = clue
    ids = set()
    for split in SPLITS:
        doc = json.loads((out / "cmrc2018" / f"{split}.json").read_text(encoding="utf-8"))
        assert doc["version"] == "v1.0" and isinstance(doc["data"], list)
        for art in doc["data"]:
            assert set(art) == {"id", "title", "paragraphs"} and len(art["paragraphs"]) == 1
            para = art["paragraphs"][0]
            assert set(para) == {"id", "context", "qas"} and art["title"] in para["context"]
            assert 1 <= len(para["qas"]) <= 4 and len(para["context"]) <= 230
            for qa in para["qas"]:
                assert set(qa) == ({"id", "question"} if split == "test" else {"id", "question", "answers"})
        rows = cmrc_rows(out, split)
        for r in rows:
            assert r["id"] not in ids
            ids.add(r["id"])
            for text, start in zip(r["answers"], r["answer_starts"]):
                assert text and r["context"][start:start + len(text)] == text, r["id"]
        if split != "test":
            assert all(r["answers"] for r in rows)
            late = sum(r["answer_starts"][0] >= 120 for r in rows) / len(rows)
            assert late >= 0.05, f"{split}: {late:.2f} of answers beyond a 128-token window"
    dev = cmrc_rows(out, "dev")
    multi = [r for r in dev if len(set(r["answers"])) > 1]
    assert len(multi) >= 5 and all(len(r["answers"]) <= 3 for r in dev)
    assert all(r["answers"][1] == r["answers"][0][:-1] for r in multi)  # with and without the unit
    assert all(len(r["answers"]) == 1 for r in cmrc_rows(out, "train"))


# --- C3 ---------------------------------------------------------------------

def test_c3_shape_and_every_choice_in_the_passage(clue):
    out, _ = clue
    ids = set()
    n_choices = Counter()
    for split in SPLITS:
        for kind in "dm":
            data = json.loads((out / "c3" / f"c3-{kind}-{split}.json").read_text(encoding="utf-8"))
            for lines, questions, pid in data:
                assert all(isinstance(x, str) and x for x in lines) and isinstance(pid, str) and pid not in ids
                ids.add(pid)
                if kind == "d":
                    assert all(x[:2] in ("男：", "女：") for x in lines)
                passage = "\n".join(lines)
                for q in questions:
                    assert set(q) == {"question", "choice", "answer"}
                    assert 2 <= len(q["choice"]) <= 4 and len(set(q["choice"])) == len(q["choice"])
                    assert q["answer"] in q["choice"]
                    assert all(c in passage for c in q["choice"]), q
                    n_choices[len(q["choice"])] += 1
    assert set(n_choices) == {2, 3, 4}


# --- CHID -------------------------------------------------------------------

def test_chid_clue_layout_tags_and_answers(clue):
    out, _ = clue
    all_tags: list[str] = []
    idioms = {i for t in CHID_TOPICS.values() for i in t["idioms"]}
    for split in SPLITS:
        lines = read_jsonl(out / "chid" / f"{split}.json")
        answer_path = out / "chid" / f"{split}_answer.json"
        answers = json.loads(answer_path.read_text(encoding="utf-8")) if split != "test" else None
        assert answer_path.exists() == (split != "test")
        tags = []
        for line in lines:
            assert set(line) == {"candidates", "content"} and 1 <= len(line["content"]) <= 2
            cands = line["candidates"]
            assert len(cands) == 10 and len(set(cands)) == 10 and set(cands) <= idioms
            line_tags = []
            for passage in line["content"]:
                found = TAG.findall(passage)
                assert 1 <= len(found) <= 3
                line_tags += found
            tags += line_tags
            if answers is not None:
                picked = [answers[t] for t in line_tags]
                assert all(0 <= i < 10 for i in picked) and len(set(picked)) == len(picked)
        if answers is not None:
            assert list(answers) == tags
        all_tags += tags
    assert len(set(all_tags)) == len(all_tags)  # numbered across all files
    assert all_tags[0] == "#idiom000001#" and [int(t[6:12]) for t in all_tags] == list(range(1, len(all_tags) + 1))


def test_chid_cue_sentences_share_no_character_with_their_idiom(clue):
    out, _ = clue
    topic_of = {i: t for t, v in CHID_TOPICS.items() for i in v["idioms"]}
    for split in ("train", "dev"):
        for r in chid_rows(out, split):
            idiom = r["candidates"][r["label_id"]]
            sentence = next(s for s in re.split(r"(?<=。)", r["text"]) if "#idiom#" in s).replace("#idiom#", "")
            assert not set(idiom) & set(sentence), (idiom, sentence)
            others = [topic_of[c] for c in r["candidates"] if c != idiom]
            assert topic_of[idiom] not in others  # no candidate of the answer's own topic


# --- CLUENER ----------------------------------------------------------------

def test_cluener_inclusive_offsets_and_types(clue):
    out, _ = clue
    types = Counter()
    for split in ("train", "dev"):
        for r in read_jsonl(out / "cluener" / f"{split}.json"):
            assert set(r) == {"text", "label"} and r["label"]
            for etype, ents in r["label"].items():
                assert etype in NER_TYPES
                for name, spans in ents.items():
                    for start, end in spans:
                        assert r["text"][start:end + 1] == name and start <= end
                        types[etype] += 1
    assert set(types) == set(NER_TYPES)
    test = read_jsonl(out / "cluener" / "test.json")
    assert [set(r) for r in test] == [{"id", "text"}] * len(test) and [r["id"] for r in test] == list(range(len(test)))


def test_cluener_dev_and_test_entities_mostly_unseen(clue):
    out, _ = clue
    seen = {e["text"] for r in ner_rows(out, "train") for e in r["entities"]}
    rng = rng_for(0, "cluener-test-labels")  # test.json is unlabelled: label test-split rows with the generator
    test_entities = [name for _ in range(200) for ents in cluener_row(rng, "test")["label"].values() for name in ents]
    for split, entities in (("dev", [e["text"] for r in ner_rows(out, "dev") for e in r["entities"]]),
                            ("test", test_entities)):
        unseen = sum(e not in seen for e in entities) / len(entities)
        print(f"cluener {split}: {unseen:.2f} of entities unseen in train")
        assert unseen >= 0.75, split
    assert any(e in seen for e in test_entities)  # not all: bare city addresses recur


# --- hard for the floors, learnable from the cues ---------------------------

floors = pytest.importorskip("zhnlp.tasks.floors", reason="zhnlp.tasks.floors not available")


def test_floors_stay_low(clue):
    from zhnlp.metrics import accuracy, cmrc2018_scores, entity_scores

    out, _ = clue
    dev = cmrc_rows(out, "dev")
    pred = floors.OverlapSpanFloor().predict(dev)
    cmrc = cmrc2018_scores({r["id"]: p for r, p in zip(dev, pred)}, {r["id"]: r["answers"] for r in dev})
    c3_train, c3_dev = c3_rows(out, "train"), c3_rows(out, "dev") + c3_rows(out, "test")
    c3 = accuracy([r["label_id"] for r in c3_dev], floors.TfidfChoiceFloor().fit(c3_train).predict(c3_dev))
    c3_chance = float(np.mean([1 / len(r["choices"]) for r in c3_dev]))
    chid_dev = chid_rows(out, "dev")
    chid = accuracy([r["label_id"] for r in chid_dev],
                    floors.TfidfChoiceFloor().fit(chid_rows(out, "train")).predict(chid_dev))
    ner_dev = ner_rows(out, "dev")
    ner_pred = floors.GazetteerNerFloor().fit(ner_rows(out, "train")).predict(ner_dev)
    as_set = lambda ents: {(e["type"], e["start"], e["end"]) for e in ents}  # noqa: E731
    ner = entity_scores([as_set(p) for p in ner_pred], [as_set(r["entities"]) for r in ner_dev])
    print(f"floors: cmrc2018 {cmrc}, c3 {c3:.3f} (chance {c3_chance:.3f}), chid {chid:.3f}, cluener f1 {ner['f1']:.3f}")
    assert cmrc["em"] < 0.3 and cmrc["f1"] < 0.45
    assert c3 < c3_chance + 0.1
    assert chid < 0.25
    assert ner["f1"] < 0.3


def test_chid_topic_cues_are_learnable(clue):
    """Naive Bayes over the blank's sentence characters -> the idiom, restricted to the candidates."""
    out, _ = clue
    train, dev = chid_rows(out, "train"), chid_rows(out, "dev")

    def sentence(r):
        return next(s for s in re.split(r"(?<=。)", r["text"]) if "#idiom#" in s)

    idioms = sorted({c for r in train for c in r["candidates"]})
    chars = {c: i for i, c in enumerate(sorted({c for r in train for c in sentence(r)}))}
    counts = np.ones((len(idioms), len(chars)))
    for r in train:
        for c in set(sentence(r)):
            counts[idioms.index(r["candidates"][r["label_id"]]), chars[c]] += 1
    logp = np.log(counts / counts.sum(1, keepdims=True))
    right = 0
    for r in dev:
        feats = [chars[c] for c in set(sentence(r)) if c in chars]
        scores = [logp[idioms.index(c), feats].sum() if c in idioms else -np.inf for c in r["candidates"]]
        right += int(np.argmax(scores)) == r["label_id"]
    print(f"chid: naive Bayes dev accuracy {right / len(dev):.3f}")
    assert right / len(dev) > 0.6


# --- the project's readers --------------------------------------------------

@pytest.mark.parametrize("task", ["cmrc2018", "c3", "chid", "cluener"])
def test_every_file_reads_through_the_project_reader(clue, task):
    reader = pytest.importorskip(f"zhnlp.data.{task}", reason=f"zhnlp.data.{task} not available")
    from zhnlp.data.clue import TaskSpec
    from zhnlp.data.rows import RowPolicy

    out, counts = clue
    kind = {"cmrc2018": "span_extraction", "c3": "multiple_choice", "chid": "idiom_cloze", "cluener": "ner"}[task]
    spec = TaskSpec(name=task, kind=kind, labels=NER_TYPES if task == "cluener" else (), dir=task)
    for split in SPLITS:
        if task == "c3":
            paths = [out / "c3" / f"c3-d-{split}.json", out / "c3" / f"c3-m-{split}.json"]
            expected = counts[f"c3/c3-d-{split}.json"] + counts[f"c3/c3-m-{split}.json"]
        else:
            paths = [out / task / f"{split}.json"]
            expected = {"cmrc2018": counts.get(f"cmrc2018/{split}.json"), "cluener": counts.get(f"cluener/{split}.json"),
                        "chid": len(chid_rows(out, split))}[task]
        counters: Counter = Counter()
        rows = list(reader.iter_split(paths, split, RowPolicy("fail"), spec, counters))
        assert len(rows) == expected, (task, split)
        assert not counters.get("fixed_answer_offsets") and not counters.get("duplicate_choices")
        labelled = split != "test" or task == "c3"
        label_key = {"cmrc2018": "answers", "c3": "label_id", "chid": "label_id", "cluener": "entities"}[task]
        assert all(bool(r[label_key]) or r[label_key] == 0 for r in rows) == labelled, (task, split)
