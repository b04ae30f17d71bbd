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

Speed (zhnlp.data.ape210k evaluates every equation, answer and trial bracket removal):
:func:`tokenize` splits with one compiled regex (measured 1.9 vs 6.5 us per equation); it only
ever answers a success, and on anything but numbers, operators and blanks the character loop
below runs instead, so every error message is its own. (An operator-stack evaluator beside the
recursive-descent parser measured 1.9 vs 2.4 us per equation, about 5% of a row: not worth a
second parser in a safety-critical module.)
"""

from __future__ import annotations

import math
import re

__all__ = ["UnsafeExpression", "evaluate", "safe_eval", "safe_eval_tokens", "tokenize"]

_OPERATORS = ("**", "+", "-", "*", "/", "(", ")")  # '**' first: longest match wins
_OPERATOR_SET = frozenset(_OPERATORS)
_WHITESPACE = " \t"
# The tokens of _tokenize_checked, in its order of preference (numbers greedy, '**' before '*').
_TOKEN = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+|\*\*|[-+*/()]")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?")


class UnsafeExpression(ValueError):
    """The expression is rejected: bad syntax, out of bounds or not computable."""


def tokenize(expr: str) -> list[str | float]:
    """Split into operator strings and float numbers; anything else is rejected."""
    # findall skips what no token matches; if only blanks were skipped, its tokens are the
    # ones the character loop finds (same start positions, same greedy choices); measured
    # 1.9 vs 6.5 us per valid.ape.json equation.
    found = _TOKEN.findall(expr)
    covered = sum(map(len, found))
    if covered == len(expr) or covered + expr.count(" ") + expr.count("\t") == len(expr):
        return [tok if tok in _OPERATOR_SET else float(tok) for tok in found]
    return _tokenize_checked(expr)  # raises the one-line error


def _tokenize_checked(expr: str) -> list[str | float]:
    """The character loop: the reference for tokens and for the error messages."""
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


def safe_eval_tokens(
    expr: str,
    *,
    max_len: int = 512,
    max_depth: int = 64,
    max_abs: float = 1e15,
    max_exponent: float = 64,
) -> tuple[float, list[str | float]]:
    """:func:`safe_eval`, also returning the tokens (for a caller that goes on with them)."""
    if not isinstance(expr, str):
        raise UnsafeExpression(f"expected a string, got {type(expr).__name__}")
    if len(expr) > max_len:
        raise UnsafeExpression(f"too long: {len(expr)} > {max_len} characters")
    if _NUMBER.fullmatch(expr) and max_depth >= 1:  # a plain number (most answers): one checked atom
        value = float(expr)
        if value <= max_abs and value != math.inf:
            return value, [value]
    tokens = tokenize(expr)
    return evaluate(tokens, max_depth=max_depth, max_abs=max_abs, max_exponent=max_exponent), tokens


def evaluate(tokens: list[str | float], *, max_depth: int = 64, max_abs: float = 1e15, max_exponent: float = 64) -> float:
    """Evaluate the tokens of :func:`tokenize` (a caller may drop some, e.g. a bracket pair)."""
    if not tokens:
        raise UnsafeExpression("empty expression")
    return _evaluate_checked(tokens, max_depth, max_abs, max_exponent)


def _evaluate_checked(tokens: list, max_depth: int, max_abs: float, max_exponent: float) -> float:
    """The recursive-descent parser: the reference for values and for the error messages."""
    parser = _Parser(tokens, max_depth, max_abs, max_exponent)
    try:
        value = parser.expr()
    except RecursionError as err:  # only reachable with a caller's very large max_depth
        raise UnsafeExpression("nested too deeply for the interpreter stack") from err
    if parser.pos != len(tokens):
        raise UnsafeExpression(f"syntax error: unexpected {tokens[parser.pos]!r}")  # pos < len: not the sentinel
    return parser.checked(value)
