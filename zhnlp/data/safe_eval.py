"""A small, bounded arithmetic evaluator (no eval, exec, ast or compile).

Grammar, with Python's precedence and associativity:

    expr   := term (('+' | '-') term)*
    term   := unary (('*' | '/') unary)*
    unary  := ('+' | '-') unary | power
    power  := atom ['**' unary]          # right-associative; -2**2 == -4
    atom   := NUMBER | '(' expr ')'
    NUMBER := digits ['.' digits*] | '.' digits

Ape210K equations use ``**`` for powers (never ``^``) and ASCII brackets only,
so those are the only forms accepted.
"""

from __future__ import annotations

import math

__all__ = ["UnsafeExpression", "evaluate", "safe_eval", "tokenize"]

_OPERATORS = ("**", "+", "-", "*", "/", "(", ")")  # '**' first: longest match wins
_WHITESPACE = " \t"


class UnsafeExpression(ValueError):
    """The expression is rejected: bad syntax, out of bounds or not computable."""


def tokenize(expr: str) -> list[str | float]:
    """Split into operator strings and float numbers; anything else is rejected."""
    tokens: list[str | float] = []
    i, n = 0, len(expr)
    while i < n:
        ch = expr[i]
        if ch in _WHITESPACE:
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
            op = next((op for op in _OPERATORS if expr.startswith(op, i)), None)
            if op is None:
                raise UnsafeExpression(f"disallowed character {ch!r} at column {i + 1}")
            tokens.append(op)
            i += len(op)
    return tokens


class _Parser:
    """Recursive descent whose nesting is capped by an explicit depth counter.

    ``tokens`` ends with a ``None`` sentinel, so looking ahead needs no bounds check (this
    parser runs once per bracket pair in zhnlp.data.ape210k, so it is kept lean).
    """

    def __init__(self, tokens: list[str | float], max_depth: int, max_abs: float, max_exponent: float):
        self.tokens = [*tokens, None]
        self.pos = 0
        self.depth = 0
        self.max_depth = max_depth
        self.max_abs = max_abs
        self.max_exponent = max_exponent

    def checked(self, value: float) -> float:
        if not math.isfinite(value) or abs(value) > self.max_abs:
            raise UnsafeExpression(f"value out of bounds: |{value}| > {self.max_abs:g}")
        return value

    def expr(self) -> float:
        value = self.term()
        tokens = self.tokens
        while (op := tokens[self.pos]) == "+" or op == "-":
            self.pos += 1
            right = self.term()
            value = self.checked(value + right if op == "+" else value - right)
        return value

    def term(self) -> float:
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

    def unary(self) -> float:
        # Every nesting (brackets, unary signs, power exponents) passes through here.
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

    def power(self) -> float:
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
        except (ValueError, OverflowError) as err:  # e.g. negative base, fractional exponent
            raise UnsafeExpression(f"power not computable: {base}**{exponent}") from err
        return self.checked(value)

    def atom(self) -> float:
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


def safe_eval(
    expr: str,
    *,
    max_len: int = 512,
    max_depth: int = 64,
    max_abs: float = 1e15,
    max_exponent: float = 64,
) -> float:
    """Evaluate an arithmetic expression of numbers, + - * / ** and brackets, within bounds."""
    if not isinstance(expr, str):
        raise UnsafeExpression(f"expected a string, got {type(expr).__name__}")
    if len(expr) > max_len:
        raise UnsafeExpression(f"too long: {len(expr)} > {max_len} characters")
    return evaluate(tokenize(expr), max_depth=max_depth, max_abs=max_abs, max_exponent=max_exponent)


def evaluate(tokens: list[str | float], *, max_depth: int = 64, max_abs: float = 1e15, max_exponent: float = 64) -> float:
    """Evaluate the tokens of :func:`tokenize` (a caller may drop some, e.g. a bracket pair)."""
    if not tokens:
        raise UnsafeExpression("empty expression")
    parser = _Parser(tokens, max_depth, max_abs, max_exponent)
    try:
        value = parser.expr()
    except RecursionError as err:  # only reachable with a caller's very large max_depth
        raise UnsafeExpression("nested too deeply for the interpreter stack") from err
    if parser.pos != len(tokens):
        raise UnsafeExpression(f"syntax error: unexpected {tokens[parser.pos]!r}")  # pos < len: not the sentinel
    return parser.checked(value)
