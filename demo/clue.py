"""The seven demo CLUE tasks: one labelled row per call, written in the FewCLUE or CLUE layout.

Every label follows from its text: TNEWS and IFLYTEK from topic words, AFQMC from the
(product, intent) pair, OCNLI/CMNLI from a premise frame's hypothesis family, CSL from
whether every keyword occurs in the abstract, CLUEWSC from pronoun agreement.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from demo.common import CLUE_SIZES, FEWCLUE_SIZES, balanced, rng_for, row_count, words, write_jsonl

_SHARED, _TNEWS, _IFLYTEK, _AFQMC = words("shared"), words("tnews"), words("iflytek"), words("afqmc")
_NLI, _CSL, _WSC = words("nli"), words("csl"), words("cluewsc")
CITIES, PERSONS, WHEN, NUM_WORDS, FOODS = (_SHARED[k] for k in ("cities", "persons", "when", "num_words", "foods"))

TNEWS_LABELS = [(e["label"], e["desc"], e["zh"], e["words"]) for e in _TNEWS["labels"]]
TNEWS_TEMPLATES, TNEWS_YEARS, TNEWS_TAILS = _TNEWS["templates"], _TNEWS["years"], _TNEWS["tails"]

IFLYTEK_LABELS = [(e["label"], e["des"], e["stem"], e["phrases"]) for e in _IFLYTEK["labels"]]
IFLYTEK_NAME_PREFIX, IFLYTEK_GENERIC_STEMS, IFLYTEK_NAME_SUFFIX = (_IFLYTEK[k] for k in ("name_prefix", "generic_stems", "name_suffix"))
IFLYTEK_OPENERS, IFLYTEK_MIDDLES, IFLYTEK_GENERIC, IFLYTEK_UPDATES = (_IFLYTEK[k] for k in ("openers", "middles", "generic", "updates"))

AFQMC_INTENTS, AFQMC_PRODUCTS = _AFQMC["intents"], _AFQMC["products"]  # product -> the intents that make sense for it
AFQMC_PREFIX, AFQMC_SUFFIX = _AFQMC["prefix"], _AFQMC["suffix"]

NLI_GOODS, NLI_SHOPS, NLI_PARKS, NLI_VEHICLES = (_NLI[k] for k in ("goods", "shops", "parks", "vehicles"))
NLI_TOPICS, NLI_ORGS, NLI_BOOK_TOPICS = (_NLI[k] for k in ("topics", "orgs", "book_topics"))
NLI_FRAMES, NLI_LABELS = _NLI["frames"], _NLI["labels"]
OCNLI_GENRES, OCNLI_LEVELS, CMNLI_PREFIX = _NLI["ocnli_genres"], _NLI["ocnli_levels"], _NLI["cmnli_prefix"]

CSL_FIELDS, CSL_SENTENCES = _CSL["fields"], _CSL["sentences"]  # each sentence uses one or two term slots

WSC_NOUNS, WSC_PRONOUN, WSC_PREDICATES = _WSC["nouns"], _WSC["pronoun"], _WSC["predicates"]
WSC_TEMPLATES, WSC_OPENERS = _WSC["templates"], _WSC["openers"]  # {X} a person; {Y} a thing ("ht") or a person ("hh")


def tnews_row(rng: random.Random, k: int) -> dict:
    label, desc, _, words = TNEWS_LABELS[k]
    a, b, c = rng.sample(words, 3)
    sentence = rng.choice(TNEWS_TEMPLATES).format(
        A=a, B=b, place=rng.choice(CITIES), n=rng.choice(NUM_WORDS), year=rng.choice(TNEWS_YEARS))
    if rng.random() < 0.4:
        sentence += rng.choice(TNEWS_TAILS).format(C=c)
    if rng.random() < 0.3:
        keywords = ""
    else:
        kws = [a, b] + rng.sample(words, rng.randint(0, 2))
        if rng.random() < 0.3:
            kws.append(rng.choice(CITIES))
        keywords = ",".join(dict.fromkeys(kws))
    return {"label": label, "label_desc": desc, "sentence": sentence, "keywords": keywords}


def iflytek_row(rng: random.Random, k: int) -> dict:
    label, des, stem, phrases = IFLYTEK_LABELS[k]
    # half the apps have a name that says nothing about their category
    name_stem = stem if rng.random() < 0.5 else rng.choice(IFLYTEK_GENERIC_STEMS)
    name = rng.choice(IFLYTEK_NAME_PREFIX) + name_stem + rng.choice(IFLYTEK_NAME_SUFFIX)
    p = rng.sample(phrases, 4)
    if rng.random() < 0.3:  # apps often mention a neighbouring feature
        other = rng.choice([lab for lab in IFLYTEK_LABELS if lab[0] != label])
        p[3] = rng.choice(other[3])
    text = (rng.choice(IFLYTEK_OPENERS).format(name=name, stem=stem, p1=p[0], p2=p[1], p3=p[2])
            + rng.choice(IFLYTEK_MIDDLES).format(p4=p[3])
            + rng.choice(IFLYTEK_GENERIC) + rng.choice(IFLYTEK_UPDATES))
    return {"label": label, "label_des": des, "sentence": text}


def _afqmc_question(rng: random.Random, product: str, intent: str, template: str | None = None) -> str:
    template = template or rng.choice(AFQMC_INTENTS[intent])
    return rng.choice(AFQMC_PREFIX) + template.format(p=product) + rng.choice(AFQMC_SUFFIX)


def afqmc_row(rng: random.Random, positive: bool) -> dict:
    """Positive: two paraphrases of one (product, intent); negative: another product and/or intent."""
    products = list(AFQMC_PRODUCTS)
    product = rng.choice(products)
    intent = rng.choice(AFQMC_PRODUCTS[product])
    t1, t2 = rng.sample(AFQMC_INTENTS[intent], 2)
    s1 = _afqmc_question(rng, product, intent, t1)
    if positive:
        s2 = _afqmc_question(rng, product, intent, t2)
    else:
        mode = rng.random()
        same_intent = [p for p in products if p != product and intent in AFQMC_PRODUCTS[p]]
        if mode < 0.5:  # same product, different question
            other_i = rng.choice([i for i in AFQMC_PRODUCTS[product] if i != intent])
            s2 = _afqmc_question(rng, product, other_i)
        elif mode < 0.75 and same_intent:  # same question, different product
            s2 = _afqmc_question(rng, rng.choice(same_intent), intent, t2)
        else:
            other_p = rng.choice([p for p in products if p != product])
            other_i = rng.choice([i for i in AFQMC_PRODUCTS[other_p] if i != intent])
            s2 = _afqmc_question(rng, other_p, other_i)
    if rng.random() < 0.5:
        s1, s2 = s2, s1
    return {"sentence1": s1, "sentence2": s2, "label": "1" if positive else "0"}


def _nli_slots(rng: random.Random) -> dict:
    (obj, unit, cat), (obj2, _, _) = rng.sample(NLI_GOODS, 2)
    vehicle, vehicle2 = rng.sample(NLI_VEHICLES, 2)
    return {"who": rng.choice(PERSONS), "when": rng.choice(WHEN), "shop": rng.choice(NLI_SHOPS),
            "num": rng.choice(NUM_WORDS), "unit": unit, "obj": obj, "cat": cat, "obj2": obj2,
            "vehicle": vehicle, "vehicle2": vehicle2, "city": rng.choice(CITIES), "park": rng.choice(NLI_PARKS),
            "food": rng.choice(FOODS), "org": rng.choice(NLI_ORGS), "topic": rng.choice(NLI_TOPICS),
            "btopic": rng.choice(NLI_BOOK_TOPICS)}


def nli_pair(rng: random.Random, label: str, prefix: str = "") -> tuple[str, str]:
    frame = NLI_FRAMES[rng.choice(sorted(NLI_FRAMES))]
    slots = _nli_slots(rng)
    premise = prefix + rng.choice(frame["premise"]).format(**slots) + rng.choice(["", "。"])
    hypothesis = rng.choice(frame[label]).format(**slots) + rng.choice(["", "。"])
    return premise, hypothesis


def ocnli_row(rng: random.Random, label: str, index: int) -> dict:
    s1, s2 = nli_pair(rng, label)
    genre = rng.choice(OCNLI_GENRES)
    row: dict[str, Any] = {"level": rng.choice(OCNLI_LEVELS), "sentence1": s1, "sentence2": s2, "label": label}
    row.update({f"label{i}": label for i in range(5)})
    row.update({"genre": genre, "prem_id": f"{genre}_{index}"})
    return row


def cmnli_row(rng: random.Random, label: str) -> dict:
    s1, s2 = nli_pair(rng, label, prefix=rng.choice(CMNLI_PREFIX))
    return {"sentence1": s1, "sentence2": s2, "label": label}


def csl_row(rng: random.Random, positive: bool) -> dict:
    field = rng.choice(sorted(CSL_FIELDS))
    terms = rng.sample(CSL_FIELDS[field], 5)
    sentences = rng.sample(CSL_SENTENCES, 4)
    # sentence i mentions terms[i], and terms[i + 1] when it has a second slot
    parts = [s.format(a=terms[i], b=terms[i + 1], field=field) for i, s in enumerate(sentences)]
    abst = ",".join(parts[:2]) + "." + ",".join(parts[2:]) + "."
    used = [t for t in terms if t in abst]
    keyword = rng.sample(used, rng.choice([3, 4]))
    if not positive:  # swap one keyword for a term absent from the abstract, same field or another
        if rng.random() < 0.5:
            pool = [t for t in CSL_FIELDS[field] if t not in abst]
        else:
            pool = [t for f in sorted(CSL_FIELDS) if f != field for t in CSL_FIELDS[f] if t not in abst]
        keyword[rng.randrange(len(keyword))] = rng.choice(pool)
    return {"abst": abst, "keyword": keyword, "label": "1" if positive else "0"}


def cluewsc_row(rng: random.Random, positive: bool) -> dict:
    """Text '{opener}{X ... Y}，{pronoun}{predicate}。'; label true iff span1 agrees with the pronoun."""
    gx = rng.choice(["male", "female"])
    kind = rng.choice(["ht", "hh"])
    gy = "thing" if kind == "ht" else ("female" if gx == "male" else "male")
    x, y = rng.choice(WSC_NOUNS[gx]), rng.choice(WSC_NOUNS[gy])
    template = rng.choice(WSC_TEMPLATES[kind])
    opener = rng.choice(WSC_OPENERS)
    clause = template.format(X=x, Y=y)
    x_index = len(opener) + template.format(X="{X}", Y=y).index("{X}")
    y_index = len(opener) + template.format(X=x, Y="{Y}").index("{Y}")
    referent = rng.choice([gx, gy])
    pronoun = WSC_PRONOUN[referent]
    predicate = rng.choice(WSC_PREDICATES["thing" if referent == "thing" else "human"])
    head = opener + clause + "，"
    text = head + pronoun + predicate + "。"
    # span1 agrees with the pronoun iff it is the referent (the two nouns differ in class)
    if positive == (referent == gx):
        span1, span1_index = x, x_index
    else:
        span1, span1_index = y, y_index
    target = {"span2_index": len(head), "span1_index": span1_index, "span1_text": span1, "span2_text": pronoun}
    return {"target": target, "label": "true" if positive else "false", "text": text}


# --------------------------------------------------------------------------- writers

def _fewclue_task(out: Path, rng: random.Random, scale: float, labels: list, make, test_fields: list[str],
                  id_key: str = "id", str_test_id: bool = False) -> dict[str, int]:
    counts = {}
    for fname, base in FEWCLUE_SIZES.items():
        n = row_count(base, scale)
        rows = []
        for i, lab in enumerate(balanced(rng, labels, n)):
            row = make(rng, lab, i)
            if fname == "test.json":
                row = {id_key: str(i) if str_test_id else i, **{k: row[k] for k in test_fields}}
            else:
                row[id_key] = i
            rows.append(row)
        counts[fname] = write_jsonl(out / fname, rows)
    return counts


def _clue_task(out: Path, rng: random.Random, scale: float, labels: list, make) -> dict[str, int]:
    counts = {}
    for fname, base in CLUE_SIZES.items():
        n = row_count(base, scale)
        rows = []
        for i, lab in enumerate(balanced(rng, labels, n)):
            row = make(rng, lab)
            if fname == "test.json":
                row = {"id": i, "sentence1": row["sentence1"], "sentence2": row["sentence2"]}
            rows.append(row)
        counts[fname] = write_jsonl(out / fname, rows)
    return counts


def write_clue(out_dir: Path, seed: int = 0, scale: float = 1.0) -> dict[str, int]:
    """Write the seven CLUE tasks under ``out_dir`` (which is the ``clue`` folder)."""
    counts: dict[str, int] = {}

    def add(task: str, task_counts: dict[str, int]) -> None:
        counts.update({f"{task}/{k}": v for k, v in task_counts.items()})

    k_tnews, k_ifly = range(len(TNEWS_LABELS)), range(len(IFLYTEK_LABELS))
    add("tnews", _fewclue_task(out_dir / "tnews", rng_for(seed, "tnews"), scale, list(k_tnews),
                               lambda r, k, i: tnews_row(r, k), ["sentence"], str_test_id=True))
    labels_rows = [{"label": str(lab), "label_desc": desc, "label_zh": zh} for lab, desc, zh, _ in TNEWS_LABELS]
    counts["tnews/labels.json"] = write_jsonl(out_dir / "tnews" / "labels.json", labels_rows)
    add("iflytek", _fewclue_task(out_dir / "iflytek", rng_for(seed, "iflytek"), scale, list(k_ifly),
                                 lambda r, k, i: iflytek_row(r, k), ["sentence"]))
    add("ocnli", _fewclue_task(out_dir / "ocnli", rng_for(seed, "ocnli"), scale, NLI_LABELS,
                               ocnli_row, ["sentence1", "sentence2"]))
    add("csl", _fewclue_task(out_dir / "csl", rng_for(seed, "csl"), scale, [True, False],
                             lambda r, pos, i: csl_row(r, pos), ["abst", "keyword"]))
    add("cluewsc", _fewclue_task(out_dir / "cluewsc", rng_for(seed, "cluewsc"), scale, [True, False],
                                 lambda r, pos, i: cluewsc_row(r, pos), ["target", "text"], id_key="idx"))
    add("afqmc", _clue_task(out_dir / "afqmc", rng_for(seed, "afqmc"), scale, [True, False], afqmc_row))
    add("cmnli", _clue_task(out_dir / "cmnli", rng_for(seed, "cmnli"), scale, NLI_LABELS, cmnli_row))
    return counts
