"""safe_eval: correct values for ordinary arithmetic, fast rejection of hostile input."""

from __future__ import annotations

import math
import random
import time

import pytest

from zhnlp.data.safe_eval import UnsafeExpression, evaluate, safe_eval, safe_eval_tokens, tokenize


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("1+2*3", 7),
        ("(1+2)*3", 9),
        ("10-4-3", 3),  # left-associative
        ("24/4/2", 3),
        ("7/2", 3.5),
        ("-3+5", 2),
        ("+3", 3),
        ("--2", 2),
        ("2*-3", -6),
        ("-2**2", -4),  # ** binds tighter than unary minus on its left
        ("(-2)**2", 4),
        ("2**3**2", 512),  # right-associative
        ("2**-1", 0.5),
        ("4**0.5", 2),
        ("3.5+.5", 4),
        ("1.", 1),
        (" 1 + 2 ", 3),
        ("3.14*(20/2)**2*40", 12560),
        ("1111111111*111111", 1111111111 * 111111),
    ],
)
def test_values(expr: str, expected: float) -> None:
    assert safe_eval(expr) == pytest.approx(expected, rel=1e-12)


HOSTILE = [
    "9**9**9",
    "__import__('os')",
    "1e308*10",
    "1+" * 100000,
    "(" * 10000 + "1" + ")" * 10000,
    "",
    "   ",
    "2**-9999",
    "1/0",
    "(1",
    "1)",
    "1 2",
    "abs(1)",
    "1.2.3",
    # beyond the brief's list
    "(" * 100 + "1" + ")" * 100,  # short enough, too deep
    "-" * 200 + "1",
    "2^3",
    "1//2",
    "1%2",
    "（1）",
    "(-8)**(1/3)",
    "0**-1",
    "10**15*10",
    ".",
    "1+",
    "*1",
    "()",
]


@pytest.mark.parametrize("expr", HOSTILE, ids=lambda e: repr(e[:20]))
def test_hostile_rejected_quickly(expr: str) -> None:
    best = float("inf")
    for _ in range(3):  # best of three, so a busy machine does not flake
        start = time.perf_counter()
        with pytest.raises(UnsafeExpression):
            safe_eval(expr)
        best = min(best, time.perf_counter() - start)
    assert best < 0.010


def test_unsafe_expression_is_value_error() -> None:
    assert issubclass(UnsafeExpression, ValueError)


def test_bounds_are_parameters() -> None:
    assert safe_eval("2**70", max_exponent=70, max_abs=1e30) == 2.0**70
    with pytest.raises(UnsafeExpression):
        safe_eval("2**70")
    assert safe_eval("1111111111*1111111111", max_abs=1e20) == pytest.approx(1234567900987654321)
    with pytest.raises(UnsafeExpression):
        safe_eval("1111111111*1111111111")
    with pytest.raises(UnsafeExpression, match="too long"):
        safe_eval("1+1", max_len=2)
    assert safe_eval("(" * 60 + "1" + ")" * 60) == 1
    with pytest.raises(UnsafeExpression, match="deeper"):
        safe_eval("((1))", max_depth=2)


def test_huge_depth_limit_never_leaks_recursion_error() -> None:
    expr = "(" * 5000 + "1" + ")" * 5000
    with pytest.raises(UnsafeExpression):
        safe_eval(expr, max_len=20000, max_depth=10**6)


# --- the fast paths against the reference ----------------------------------------
# A faithful copy of the tokenizer and parser before the fast paths (regex tokenizer,
# operator-stack evaluator) were added: every value and every error message must match it.

_REF_OPERATORS = ("**", "+", "-", "*", "/", "(", ")")


def reference_tokenize(expr: str) -> list[str | float]:
    tokens: list[str | float] = []
    i, n = 0, len(expr)
    while i < n:
        ch = expr[i]
        if ch in " \t":
            i += 1
        elif ch.isascii() and (ch.isdigit() or ch == "."):
            start = i
            while i < n and expr[i].isascii() and expr[i].isdigit():
                i += 1
            if i < n and expr[i] == ".":
                i += 1
                while i < n and expr[i].isascii() and expr[i].isdigit():
                    i += 1
            text = expr[start:i]
            if text == ".":
                raise UnsafeExpression(f"bad number at column {start + 1}")
            tokens.append(float(text))
        else:
            op = next((op for op in _REF_OPERATORS if expr.startswith(op, i)), None)
            if op is None:
                raise UnsafeExpression(f"disallowed character {ch!r} at column {i + 1}")
            tokens.append(op)
            i += len(op)
    return tokens


class ReferenceParser:
    def __init__(self, tokens, max_depth, max_abs, max_exponent):
        self.tokens = [*tokens, None]
        self.pos = 0
        self.depth = 0
        self.max_depth = max_depth
        self.max_abs = max_abs
        self.max_exponent = max_exponent

    def checked(self, value):
        if not math.isfinite(value) or abs(value) > self.max_abs:
            raise UnsafeExpression(f"value out of bounds: |{value}| > {self.max_abs:g}")
        return value

    def expr(self):
        value = self.term()
        tokens = self.tokens
        while (op := tokens[self.pos]) == "+" or op == "-":
            self.pos += 1
            right = self.term()
            value = self.checked(value + right if op == "+" else value - right)
        return value

    def term(self):
        value = self.unary()
        tokens = self.tokens
        while (op := tokens[self.pos]) == "*" or op == "/":
            self.pos += 1
            right = self.unary()
            if op == "*":
                value = self.checked(value * right)
            elif right == 0:
                raise UnsafeExpression("division by zero")
            else:
                value = self.checked(value / right)
        return value

    def unary(self):
        self.depth += 1
        if self.depth > self.max_depth:
            raise UnsafeExpression(f"nested deeper than {self.max_depth}")
        tok = self.tokens[self.pos]
        if tok == "+" or tok == "-":
            self.pos += 1
            value = (-1.0 if tok == "-" else 1.0) * self.unary()
        else:
            value = self.power()
        self.depth -= 1
        return value

    def power(self):
        base = self.atom()
        if self.tokens[self.pos] != "**":
            return base
        self.pos += 1
        exponent = self.unary()
        if abs(exponent) > self.max_exponent:
            raise UnsafeExpression(f"exponent out of bounds: |{exponent}| > {self.max_exponent}")
        if base == 0 and exponent < 0:
            raise UnsafeExpression("division by zero: zero to a negative power")
        try:
            value = math.pow(base, exponent)
        except (ValueError, OverflowError) as err:
            raise UnsafeExpression(f"power not computable: {base}**{exponent}") from err
        return self.checked(value)

    def atom(self):
        tok = self.tokens[self.pos]
        if tok is not None:
            self.pos += 1
        if isinstance(tok, float):
            return self.checked(tok)
        if tok == "(":
            value = self.expr()
            if self.tokens[self.pos] != ")":
                raise UnsafeExpression("unbalanced brackets: missing ')'")
            self.pos += 1
            return value
        where = "end of expression" if tok is None else repr(tok)
        raise UnsafeExpression(f"syntax error: unexpected {where}")


def reference_evaluate(tokens, *, max_depth=64, max_abs=1e15, max_exponent=64) -> float:
    if not tokens:
        raise UnsafeExpression("empty expression")
    parser = ReferenceParser(tokens, max_depth, max_abs, max_exponent)
    try:
        value = parser.expr()
    except RecursionError as err:
        raise UnsafeExpression("nested too deeply for the interpreter stack") from err
    if parser.pos != len(tokens):
        raise UnsafeExpression(f"syntax error: unexpected {tokens[parser.pos]!r}")
    return parser.checked(value)


def reference_safe_eval(expr, *, max_len=512, max_depth=64, max_abs=1e15, max_exponent=64) -> float:
    if not isinstance(expr, str):
        raise UnsafeExpression(f"expected a string, got {type(expr).__name__}")
    if len(expr) > max_len:
        raise UnsafeExpression(f"too long: {len(expr)} > {max_len} characters")
    return reference_evaluate(reference_tokenize(expr), max_depth=max_depth, max_abs=max_abs, max_exponent=max_exponent)


def outcome(fn, *args, **kwargs):
    """The value (bit pattern, so -0.0 != 0.0) or the exception type and message."""
    try:
        value = fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - compared, type and message
        return ("raised", type(err).__name__, str(err))
    return ("value", repr(value)) if isinstance(value, float) else ("value", value)


_NUMBERS = ["0", "1", "2", "3", "5", "7", "10", "0.5", ".25", "1.", "12.5", "100", "3.14", "1111111111", "9" * 17, "0.0", "2.5e3"]


def random_expression(rng: random.Random, size: int) -> str:
    """A random, often valid, sometimes hostile expression: nested brackets, signs, powers, 0 divisors."""
    if size <= 0 or rng.random() < 0.2:
        return rng.choice(_NUMBERS[:-1]) if rng.random() < 0.97 else rng.choice([".", "..", "1.2.3", "x", "（1）", ""])
    kind = rng.random()
    if kind < 0.25:
        return "(" + random_expression(rng, size - 1) + ")"
    if kind < 0.35:
        return rng.choice("+-") + random_expression(rng, size - 1)
    if kind < 0.42:
        return random_expression(rng, 0) + "**" + rng.choice(["", "-", "("]) + random_expression(rng, min(size - 1, 1)) + ("" if rng.random() < 0.8 else ")")
    op = rng.choice(["+", "-", "*", "/", "+", "-", "*", "/", "**", " + ", "//", ")", "("])
    split = rng.randint(0, size - 1)
    return random_expression(rng, split) + op + random_expression(rng, size - 1 - split)


def hostile_expressions(count: int, seed: int = 13) -> list[str]:
    rng = random.Random(seed)
    exprs = [random_expression(rng, rng.randint(1, 14)) for _ in range(count)]
    return exprs + HOSTILE[:3] + HOSTILE[5:] + [
        "(" * 63 + "1" + ")" * 63, "(" * 64 + "1" + ")" * 64, "-" * 63 + "1", "-" * 64 + "1",
        "2**" * 40 + "1", "0/0", "0**-1", "(-8)**(1/3)", "10**20", "1e5", "1/(1-1)", "((1)", "(1))",
        "-0", "-0*1", "0*-1", "2**-1*3", "-2**-2", "2**-3**2", "1 \t+ 2", "2**64", "2**64.5", "2**(8*8+1)",
    ]


def test_tokenize_matches_reference() -> None:
    for expr in hostile_expressions(3000) + ["1." * 200, "1.2.3.4", ". 5", "1 .5", "٣+1", "1\n+1", "1**2*3***4"]:
        assert outcome(tokenize, expr) == outcome(reference_tokenize, expr), expr


@pytest.mark.parametrize(
    "limits",
    [{}, {"max_abs": 1e20}, {"max_depth": 3}, {"max_depth": 10**6, "max_len": 20000}, {"max_exponent": 2, "max_abs": 100},
     {"max_abs": math.inf}, {"max_exponent": math.inf, "max_abs": 1e300}],
    ids=repr,
)
def test_safe_eval_matches_reference(limits: dict) -> None:
    for expr in hostile_expressions(3000):
        assert outcome(safe_eval, expr, **limits) == outcome(reference_safe_eval, expr, **limits), expr


def test_evaluate_matches_reference_on_odd_token_lists() -> None:
    lists = [[], [1.0], [1], [-1.0], ["(", 2.0, ")"], [2.0, "%", 3.0], [math.inf], [math.nan], ["-", -0.0], [2.0, "**", -65.0],
             [1.0, 2.0], ["(", "(", 1.0, ")"], [1.0, "+"], ["+"], [")"], [1e16], [2.0, "*", 1e15]]
    for tokens in lists:
        assert outcome(evaluate, tokens) == outcome(reference_evaluate, tokens), tokens


def test_safe_eval_tokens_matches_reference() -> None:
    def reference(expr, **limits):
        return reference_safe_eval(expr, **limits), reference_tokenize(expr)

    plain = ["5", "0", "0.", "12.50", "9" * 30, "9" * 400, "1" * 600, "007", " 5", "5 ", "+5", ".5"]
    for limits in ({}, {"max_abs": 1e20}, {"max_depth": 0}, {"max_abs": math.inf}, {"max_len": 3}):
        for expr in plain + hostile_expressions(500, seed=3):
            assert outcome(safe_eval_tokens, expr, **limits) == outcome(reference, expr, **limits), (expr, limits)
