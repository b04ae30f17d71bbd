"""The demo Ape210K corpus: word problems from templates, answers in the real data's formats.

Planted defect: in every split of ``n`` rows, the rows at 0-based positions ``n // 3`` and
``2 * n // 3`` (:func:`ape_mismatch_positions`) carry an ``ans`` equal to the true value of
their equation plus 1, so the "equation must evaluate to ans" filter drops exactly two rows
per split. Every other row's ``ans`` equals its equation exactly.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction
from pathlib import Path

from demo.common import APE_SIZES, rng_for, row_count, words, write_jsonl

_APE = words("ape210k")
APE_NAMES, APE_GOODS, APE_SHOPS, APE_FACTORIES = (_APE[k] for k in ("names", "goods", "shops", "factories"))
APE_ITEMS, APE_CLASSES, APE_SUBJECTS = _APE["items"], _APE["classes"], _APE["subjects"]  # items: [name, measure word]


def _terminates(v: Fraction) -> bool:
    d = v.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def fmt_decimal(v: Fraction) -> str:
    """Exact decimal string of a terminating fraction ("12", "3.75")."""
    assert _terminates(v), v
    k = 0
    while (v * 10 ** k).denominator != 1:
        k += 1
    digits = str(abs(v.numerator * 10 ** k // v.denominator)).rjust(k + 1, "0")
    s = digits if k == 0 else f"{digits[:-k]}.{digits[-k:]}"
    return ("-" if v < 0 else "") + s


def fmt_fraction(v: Fraction) -> str:
    """Ape210K style: "7", "(3/4)" or mixed "2(1/3)"."""
    if v.denominator == 1:
        return str(v.numerator)
    whole = v.numerator // v.denominator
    rest = v - whole
    frac = f"({rest.numerator}/{rest.denominator})"
    return f"{whole}{frac}" if whole else frac


def fmt_ans(v: Fraction, style: str = "auto") -> str:
    """Format an answer as the real data does: integer, decimal, fraction, mixed number or percent."""
    if style == "percent" and _terminates(v * 100):
        return fmt_decimal(v * 100) + "%"
    if v.denominator == 1:
        return str(v.numerator)
    if style in ("auto", "decimal") and _terminates(v):
        return fmt_decimal(v)
    return fmt_fraction(v)


def ape_segment(text: str) -> str:
    """Ape210K ``segmented_text``: numbers (with decimals and %) whole, every other character alone."""
    return " ".join(re.findall(r"\d+(?:\.\d+)?%?|\S", text))


def ape_mismatch_positions(n: int) -> tuple[int, int]:
    """0-based positions of the two rows per split whose ``ans`` is deliberately wrong."""
    return n // 3, 2 * n // 3


F = Fraction


def _ape_add(r):
    a, b, (item, u), n1, n2 = r.randint(12, 480), r.randint(5, 300), r.choice(APE_ITEMS), *r.sample(APE_NAMES, 2)
    return f"{n1}有{a}{u}{item}，{n2}又送给{n1}{b}{u}，现在{n1}一共有多少{u}{item}？", f"{a}+{b}", F(a + b), "auto"


def _ape_sub(r):
    b = r.randint(10, 300)
    a, shop, (item, u) = b + r.randint(5, 400), r.choice(APE_SHOPS), r.choice(APE_ITEMS)
    return f"{shop}原有{item}{a}{u}，卖出{b}{u}后，还剩多少{u}？", f"{a}-{b}", F(a - b), "auto"


def _ape_mul(r):
    a, b, (item, u) = r.randint(6, 60), r.randint(3, 40), r.choice(APE_ITEMS)
    return f"每箱{item}有{a}{u}，{b}箱一共有多少{u}？", f"{a}*{b}", F(a * b), "auto"


def _ape_div(r):
    b, q = r.randint(2, 9), r.randint(12, 60)
    return f"学校把{b * q}本练习本平均分给{b}个班，每班分到多少本？", f"{b * q}/{b}", F(q), "auto"


def _ape_two_step(r):
    a, p, n1 = r.randint(2, 9), r.randint(3, 15), r.choice(APE_NAMES)
    m = (a * p // 50 + 1) * 50
    return (f"{n1}买了{a}支钢笔，每支{p}元，付给售货员{m}元，应找回多少元？",
            f"{m}-{a}*{p}", F(m - a * p), "auto")


def _ape_fraction_of(r):
    d = r.choice([3, 4, 5, 6, 8])
    a = d * r.randint(3, 30) if r.random() < 0.7 else r.randint(10, 90)
    return (f"一根绳子长{a}米，第一次用去全长的(1/{d})，还剩多少米？",
            f"{a}*(1-(1/{d}))", F(a) * (1 - F(1, d)), "fraction")


def _ape_fraction_left(r):
    d1, d2 = r.sample([3, 4, 5, 6, 7, 8, 9, 10], 2)
    return (f"一项工程，第一周完成了全部的(1/{d1})，第二周完成了全部的(1/{d2})，还剩几分之几没有完成？",
            f"1-(1/{d1})-(1/{d2})", 1 - F(1, d1) - F(1, d2), "fraction")


def _ape_discount(r):
    a, p, g = r.randint(4, 90) * 10, r.choice([5, 10, 15, 20, 25, 30, 40]), r.choice(APE_GOODS)
    return f"一个{g}原价{a}元，现在降价{p}%出售，现价多少元？", f"{a}*(1-{p}%)", F(a) * (1 - F(p, 100)), "decimal"


def _ape_percent_of_total(r):
    total = r.choice([16, 20, 25, 32, 40, 50, 80])
    a, c = r.randint(total // 5, total * 4 // 5), r.choice(APE_CLASSES)
    return (f"{c}有男生{a}人，女生{total - a}人，男生人数占总人数的百分之几？",
            f"({a}/({a}+{total - a}))*100%", F(a, total), "percent")


def _ape_ratio_share(r):
    r1, r2 = r.sample(range(1, 10), 2)
    n, c = (r1 + r2) * r.randint(2, 8), r.choice(APE_CLASSES)
    return (f"{c}男生与女生人数的比是{r1}：{r2}，总人数是{n}人，男生有多少人？",
            f"{n}*{r1}/({r1}+{r2})", F(n * r1, r1 + r2), "auto")


def _ape_ratio_value(r):
    b, a = sorted(r.sample(range(2, 40), 2))
    return f"一个长方形的长是{a}厘米，宽是{b}厘米，长与宽的比值是多少？", f"{a}:{b}", F(a, b), "fraction"


def _ape_mixed(r):
    w, num, den = r.randint(1, 5), *r.choice([(1, 2), (1, 3), (2, 3), (1, 4), (3, 4), (2, 5)])
    n = r.randint(2, 12)
    weight = F(w) + F(num, den)
    return (f"一桶油重{w}({num}/{den})千克，{n}桶油重多少千克？",
            f"{w}({num}/{den})*{n}", weight * n, "fraction")


def _ape_meeting(r):
    a, b, t = r.randint(40, 120), r.randint(40, 120), r.randint(2, 6)
    return (f"甲乙两车同时从两地相对开出，甲车每小时行{a}千米，乙车每小时行{b}千米，{t}小时后相遇，两地相距多少千米？",
            f"({a}+{b})*{t}", F((a + b) * t), "auto")


def _ape_average(r):
    s, n1 = r.sample(range(70, 101), 3), r.choice(APE_NAMES)
    subj = r.choice(APE_SUBJECTS)
    return (f"{n1}三次{subj}测验的成绩分别是{s[0]}分、{s[1]}分和{s[2]}分，平均成绩是多少分？",
            f"({s[0]}+{s[1]}+{s[2]})/3", F(sum(s), 3), "fraction")


def _ape_work(r):
    a, b = r.sample(range(4, 31), 2)
    return (f"一项工程，甲队单独做{a}天完成，乙队单独做{b}天完成，两队合作多少天完成？",
            f"1/((1/{a})+(1/{b}))", 1 / (F(1, a) + F(1, b)), "fraction")


def _ape_growth(r):
    a, p = r.randint(10, 400), r.choice([5, 8, 10, 12, 15, 20, 25, 50])
    fac, item = r.choice(APE_FACTORIES), r.choice(["粮食", "钢材", "水果", "化肥", "蔬菜"])
    return (f"{fac}去年生产{item}{a}吨，今年比去年增产{p}%，今年生产{item}多少吨？",
            f"{a}*(1+{p}%)", F(a) * (1 + F(p, 100)), "decimal")


def _ape_area(r):
    a = F(r.randint(10, 60)) + r.choice([F(0), F(1, 2), F(1, 4)])
    b = F(r.randint(4, 30)) + r.choice([F(0), F(1, 2)])
    return (f"一块长方形菜地长{fmt_decimal(a)}米，宽{fmt_decimal(b)}米，这块菜地的面积是多少平方米？",
            f"{fmt_decimal(a)}*{fmt_decimal(b)}", a * b, "decimal")


APE_TEMPLATES = [_ape_add, _ape_sub, _ape_mul, _ape_div, _ape_two_step, _ape_fraction_of, _ape_fraction_left,
                 _ape_discount, _ape_percent_of_total, _ape_ratio_share, _ape_ratio_value, _ape_mixed,
                 _ape_meeting, _ape_average, _ape_work, _ape_growth, _ape_area]


def aperow_count(rng: random.Random, n: int, ids: list[str]) -> list[dict]:
    bad = set(ape_mismatch_positions(n))
    rows = []
    for i in range(n):
        text, equation, value, style = rng.choice(APE_TEMPLATES)(rng)
        if i in bad:
            value += 1  # deliberate mismatch (see the module docstring)
        rows.append({"id": ids[i], "segmented_text": ape_segment(text), "original_text": text,
                     "ans": fmt_ans(value, style), "equation": f"x={equation}"})
    return rows


def write_ape210k(out_dir: Path, seed: int = 0, scale: float = 1.0) -> dict[str, int]:
    rng = rng_for(seed, "ape210k")
    sizes = {split: row_count(base, scale) for split, base in APE_SIZES.items()}
    ids = [str(i) for i in rng.sample(range(100000, 1000000), sum(sizes.values()))]
    counts, start = {}, 0
    for split, n in sizes.items():
        rows = aperow_count(rng, n, ids[start:start + n])
        start += n
        counts[f"{split}.ape.json"] = write_jsonl(out_dir / f"{split}.ape.json", rows)
    return counts
