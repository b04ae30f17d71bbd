"""The demo CMRC2018, C3, CHID and CLUENER corpora, in their official file formats.

Each answer follows from a cue that a small model can learn and a non-neural floor
(``zhnlp.tasks.floors``) cannot read:

* CMRC2018: company passages state several relations of one company, of different kinds
  (a person, a year, a city, ...) and now and then two of one kind (founder and chairman,
  founding and listing year); the question's relation word picks one. Facts share sentences, and echo sentences repeat the
  question's words but state nothing, so "the sentence most like the question, less
  the question's characters" is rarely the answer.
* C3: every choice is a slot value the passage mentions; the question's cue (先/最后,
  原来/现在, 爸爸/妈妈, ...) picks the slot, so choice-passage similarity cannot. Most
  questions also offer a choice of another kind (a time among places), an easy first step.
* CHID: each idiom belongs to a topic whose cue sentences share no character with it;
  the ten candidates hold the answers and idioms of other topics.
* CLUENER: entities sit in typed cue templates and are composed of parts whose heads
  (for names, the given names) are split between train, dev and test, so a gazetteer of
  the train entities misses most dev and test entities.

Whole-file JSON (CMRC2018, C3, the CHID answer files) is written with one question or
answer per line, so every file's row count is its line count.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from demo.common import rng_for, row_count, words, write_jsonl

_W, _SHARED = words("reading"), words("shared")
CITIES, PLACES, FOODS, TIMES = (_SHARED[k] for k in ("cities", "places", "foods", "times"))
SURNAMES, GIVEN = _W["names"]["surnames"], _W["names"]["given"]
BRANDS, CMRC, C3, CHID, NER = _W["brands"], _W["cmrc"], _W["c3"], _W["chid"], _W["cluener"]
C3_POOLS = {"places": PLACES, "foods": FOODS, "times": TIMES, "cities": CITIES, **C3["pools"]}
CHID_TOPICS = CHID["topics"]
NER_TYPES = ("address", "book", "company", "game", "government", "movie", "name", "organization", "position", "scene")

SPLITS = ("train", "dev", "test")
CMRC_SIZES = {"train": 240, "dev": 60, "test": 30}  # questions
C3_SIZES = {"train": 100, "dev": 30, "test": 30}  # questions per file (d and m each)
CHID_SIZES = {"train": 240, "dev": 60, "test": 40}  # blanks
CLUENER_SIZES = {"train": 300, "dev": 80, "test": 40}  # rows
CHID_CANDIDATES = 10
LONG_EVERY = 5  # every fifth CMRC passage is long: its last facts lie beyond a 128-token window

_dumps = lambda obj: json.dumps(obj, ensure_ascii=False)  # noqa: E731


def _write_lines(path: Path, lines: list[str]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)
    return len(lines)


def _person(rng: random.Random, given: list[str] = GIVEN) -> str:
    return rng.choice(SURNAMES) + rng.choice(given)


def _distinct(rng: random.Random, make, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        v = make()
        if v not in out:
            out.append(v)
    return out


# --------------------------------------------------------------------------- CMRC2018

def cmrc_passage(rng: random.Random, long: bool, n_questions: int) -> tuple[str, str, list[tuple[str, str, int]]]:
    """A company passage: (company, context, [(asked relation, answer, offset)]); long ones end with an asked fact."""
    industry = rng.choice(sorted(CMRC["industries"]))
    company = rng.choice(BRANDS) + industry
    founder, chairman = _distinct(rng, lambda: _person(rng), 2)
    hq, factory = rng.sample(CITIES, 2)
    y1 = rng.randint(1950, 2005)
    values = {"founder": founder, "chairman": chairman, "founded": f"{y1}年", "listed": f"{y1 + rng.randint(3, 15)}年",
              "hq": hq, "factory": factory, "staff": f"{rng.randint(12, 980) * 10}人",
              "product": rng.choice(CMRC["industries"][industry])}
    both = rng.randrange(len(CMRC["pairs"])) if long or rng.random() < 0.4 else -1
    relations = [r for k, pair in enumerate(CMRC["pairs"]) for r in (pair if k == both else [rng.choice(pair)])]
    relations += CMRC["singles"]
    rng.shuffle(relations)
    sentences: list[list[str]] = []  # fact sentences hold relation names, the others their text
    i = 0
    while i < len(relations):
        k = min(rng.randint(1, 3), len(relations) - i)
        sentences.append(relations[i:i + k])
        i += k
    n_questions = min(n_questions, len(relations))
    if long:  # the last fact is always asked
        asked = rng.sample(relations[:-1], n_questions - 1) + [relations[-1]]
    else:
        asked = rng.sample(relations, n_questions)
    # echo sentences repeat the asked relations' nouns and state no fact
    echoed = asked + [r for r in relations if r not in asked]
    for j in range(2 if long else 1):
        e1 = rng.choice(CMRC["relations"][echoed[j % n_questions]]["echo"])
        e2 = rng.choice(CMRC["relations"][echoed[(j + 1) % len(echoed)]]["echo"])
        text = rng.choice(CMRC["echoes"]).format(X=company, e1=e1, e2=e2)
        sentences.insert(rng.randint(1, len(sentences)), [text])
    if long:  # fillers before the last sentence push the last facts beyond the first window
        for text in rng.sample(CMRC["fillers"], 4):
            sentences.insert(rng.randint(1, len(sentences) - 1), [text.format(industry=industry)])
    context, offsets, first = "", {}, True
    for sentence in sentences:
        for j, item in enumerate(sentence):
            if j:
                context += "，"
            if item not in values:
                context += item
                continue
            template = rng.choice(CMRC["relations"][item]["facts"])
            subject = company if first or rng.random() < 0.4 else rng.choice(CMRC["references"])
            first = False
            offsets[item] = len(context) + len(template.split("{v}")[0].format(S=subject))
            context += template.format(S=subject, v=values[item])
        context += "。"
    return company, context, [(r, values[r], offsets[r]) for r in asked]


def cmrc_article(rng: random.Random, index: int, split: str, n_questions: int) -> dict:
    company, context, asked = cmrc_passage(rng, index % LONG_EVERY == LONG_EVERY - 1, n_questions)
    pid = f"DEMO_{split.upper()}_{index}"
    qas = []
    for q, (rel, text, start) in enumerate(asked):
        qa: dict = {"question": rng.choice(CMRC["relations"][rel]["questions"]).format(X=company),
                    "id": f"{pid}_QUERY_{q}"}
        if split != "test":
            golds = [text]
            if split == "dev" and CMRC["relations"][rel]["kind"] in ("year", "count"):
                golds += [text[:-1]] + [text] * rng.randint(0, 1)  # with and without the unit
            qa["answers"] = [{"text": t, "answer_start": start} for t in golds]
        qas.append(qa)
    return {"id": pid, "title": company, "paragraphs": [{"id": pid, "context": context, "qas": qas}]}


def _squad_lines(articles: list[dict]) -> list[str]:
    """SQuAD-v1 JSON with one question a line."""
    lines = []
    for a, art in enumerate(articles):
        para = art["paragraphs"][0]
        qas = para["qas"]
        for q, qa in enumerate(qas):
            line = ""
            if q == 0:
                line = ('{"version": "v1.0", "data": [' if a == 0 else "") + (
                    f'{{"id": {_dumps(art["id"])}, "title": {_dumps(art["title"])}, "paragraphs": '
                    f'[{{"id": {_dumps(para["id"])}, "context": {_dumps(para["context"])}, "qas": [')
            line += _dumps(qa)
            line += ("]}]}" + ("," if a < len(articles) - 1 else "]}")) if q == len(qas) - 1 else ","
            lines.append(line)
    return lines


def write_cmrc2018(out: Path, rng: random.Random, scale: float) -> dict[str, int]:
    counts = {}
    for split in SPLITS:
        n, articles = row_count(CMRC_SIZES[split], scale), []
        while n > 0:
            articles.append(cmrc_article(rng, len(articles), split, min(n, rng.randint(2, 4))))
            n -= len(articles[-1]["paragraphs"][0]["qas"])
        counts[f"{split}.json"] = _write_lines(out / f"{split}.json", _squad_lines(articles))
    return counts


# --------------------------------------------------------------------------- C3

def c3_passage(rng: random.Random, schema: dict, n_questions: int) -> tuple[list[str], list[dict]]:
    by_pool: dict[str, list[str]] = {}
    for slot, pool in schema["slots"].items():
        by_pool.setdefault(pool, []).append(slot)
    values = {}
    for pool, slots in by_pool.items():
        picked = rng.sample(C3_POOLS[pool], len(slots))
        if pool in schema.get("ordered", ()):
            picked.sort(key=C3_POOLS[pool].index)
        values.update(zip(slots, picked))
    lines = [line.format(**values) for line in schema["lines"]]
    questions = []
    for question, slot in rng.sample(schema["questions"], min(n_questions, len(schema["questions"]))):
        # 2 choices: the answer and one of its kind; 3-4: also one or two of another kind
        pool = schema["slots"][slot]
        same = [values[s] for s in by_pool[pool] if s != slot]
        other = [values[s] for p, slots in by_pool.items() if p != pool for s in slots]
        n = rng.choice([2, 3, 3, 4, 4])
        k_other = 0 if n == 2 else min(len(other), max(1, n - 1 - len(same)))
        choices = [values[slot]] + rng.sample(same, min(len(same), n - 1 - k_other)) + rng.sample(other, k_other)
        rng.shuffle(choices)
        questions.append({"question": question.format(**values), "choice": choices, "answer": values[slot]})
    return lines, questions


def _c3_lines(passages: list[list]) -> list[str]:
    """The C3 list of [lines, questions, id] with one question a line."""
    out = []
    for p, (lines, questions, pid) in enumerate(passages):
        for q, question in enumerate(questions):
            line = (("[" if p == 0 else "") + "[" + _dumps(lines) + ", [") if q == 0 else ""
            line += _dumps(question)
            line += ("], " + _dumps(pid) + "]" + ("," if p < len(passages) - 1 else "]")) if q == len(questions) - 1 else ","
            out.append(line)
    return out


def write_c3(out: Path, rng: random.Random, scale: float) -> dict[str, int]:
    counts = {}
    for s, split in enumerate(SPLITS):
        for kind, schemas in (("d", C3["dialogue"]), ("m", C3["mixed"])):
            n, passages = row_count(C3_SIZES[split], scale), []
            while n > 0:
                lines, questions = c3_passage(rng, rng.choice(schemas), min(n, rng.randint(1, 2)))
                passages.append([lines, questions, f"{kind}{s}-{len(passages)}"])
                n -= len(questions)
            name = f"c3-{kind}-{split}.json"
            counts[name] = _write_lines(out / name, _c3_lines(passages))
    return counts


# --------------------------------------------------------------------------- CHID

def chid_row(rng: random.Random, n_blanks: int, next_tag: int) -> tuple[dict, dict[str, int]]:
    """One CLUE-layout line: 1-2 passages with ``n_blanks`` blanks of distinct topics, 10 candidates."""
    topics = rng.sample(sorted(CHID_TOPICS), n_blanks)
    answers = [rng.choice(CHID_TOPICS[t]["idioms"]) for t in topics]
    others = rng.sample([t for t in sorted(CHID_TOPICS) if t not in topics], CHID_CANDIDATES - n_blanks)
    candidates = answers + [rng.choice(CHID_TOPICS[t]["idioms"]) for t in others]
    rng.shuffle(candidates)
    split_at = n_blanks  # one passage, or two when there are more than three blanks (and now and then)
    if n_blanks > 3 or (n_blanks > 1 and rng.random() < 0.3):
        split_at = rng.randint(max(1, n_blanks - 3), min(3, n_blanks - 1))
    content, passage, labels = [], "", {}
    for i, (topic, idiom) in enumerate(zip(topics, answers)):
        tag = f"#idiom{next_tag + i:06d}#"
        labels[tag] = candidates.index(idiom)
        passage += rng.choice(CHID_TOPICS[topic]["cues"]).format(P=rng.choice(CHID["persons"]), B=tag)
        if i + 1 == split_at or i + 1 == n_blanks:
            content.append(passage)
            passage = ""
    return {"candidates": candidates, "content": content}, labels


def write_chid(out: Path, rng: random.Random, scale: float) -> dict[str, int]:
    counts, next_tag = {}, 1
    for split in SPLITS:
        n, rows, answers = row_count(CHID_SIZES[split], scale), [], {}
        while n > 0:
            row, labels = chid_row(rng, min(n, rng.randint(1, 5)), next_tag)
            rows.append(row)
            answers.update(labels)
            next_tag += len(labels)
            n -= len(labels)
        counts[f"{split}.json"] = write_jsonl(out / f"{split}.json", rows)
        if split != "test":
            items = [f"{_dumps(tag)}: {idx}" for tag, idx in answers.items()]
            lines = [("{" if i == 0 else "") + item + ("," if i < len(items) - 1 else "}") for i, item in enumerate(items)]
            counts[f"{split}_answer.json"] = _write_lines(out / f"{split}_answer.json", lines)
    return counts


# --------------------------------------------------------------------------- CLUENER

def _part(items: list[str], split: str) -> list[str]:
    """Three fifths of a list for train, one fifth each for dev and test (by position)."""
    keep = {"train": (0, 1, 2), "dev": (3,), "test": (4,)}[split]
    return [x for i, x in enumerate(items) if i % 5 in keep]


def ner_entity(rng: random.Random, kind: str, split: str) -> str:
    c = rng.choice
    if kind == "name":
        return _person(rng, _part(GIVEN, split))
    if kind == "address":
        if rng.random() < 0.25:
            return c(CITIES)  # shared by every split: the part a gazetteer gets right
        return c(CITIES) + c(_part(NER["roads"], split)) + (f"{rng.randint(1, 99)}号" if rng.random() < 0.5 else "")
    if kind in ("book", "movie"):
        return f"《{c(_part(NER[kind + '_heads'], split))}{c(NER[kind + '_tails'])}》"
    if kind == "company":
        return c(_part(BRANDS, split)) + c(NER["industries"])
    if kind == "government":
        return c(_part(CITIES, split)) + "市" + c(NER["government_depts"])
    head = {"game": "game", "organization": "org", "position": "position", "scene": "scene"}[kind]
    return c(_part(NER[f"{head}_heads"], split)) + c(NER[f"{head}_tails"])


def cluener_row(rng: random.Random, split: str) -> dict:
    text, label = "", {}
    for i, piece in enumerate(re.split(r"\{(\w+)\}", rng.choice(NER["templates"]))):
        if i % 2 == 0:
            text += piece
            continue
        kind = piece.rstrip("0123456789")
        entity = ner_entity(rng, kind, split)
        label.setdefault(kind, {}).setdefault(entity, []).append([len(text), len(text) + len(entity) - 1])
        text += entity
    return {"text": text, "label": label}


def write_cluener(out: Path, rng: random.Random, scale: float) -> dict[str, int]:
    counts = {}
    for split in SPLITS:
        rows = [cluener_row(rng, split) for _ in range(row_count(CLUENER_SIZES[split], scale))]
        if split == "test":
            rows = [{"id": i, "text": r["text"]} for i, r in enumerate(rows)]
        counts[f"{split}.json"] = write_jsonl(out / f"{split}.json", rows)
    return counts


def write_reading(out_dir: Path, seed: int = 0, scale: float = 1.0) -> dict[str, int]:
    """Write cmrc2018, c3, chid and cluener under ``out_dir`` (the ``clue`` folder); row counts by path."""
    counts: dict[str, int] = {}
    for task, writer in (("cmrc2018", write_cmrc2018), ("c3", write_c3), ("chid", write_chid),
                         ("cluener", write_cluener)):
        task_counts = writer(Path(out_dir) / task, rng_for(seed, task), scale)
        counts.update({f"{task}/{k}": v for k, v in task_counts.items()})
    return counts
