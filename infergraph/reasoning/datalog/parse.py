"""Read RDFox Datalog (``*.dlog``) into rules: the subset the reference datasets use.

Hand-written (a regex tokenizer and a recursive-descent parser) rather than a grammar
library: the subset is small, FILTER and BIND expressions are SPARQL already and pass
through token by token, and every error must name file, line and column in Datalog's
own terms ("unsupported construct OPTIONAL"), which is easier to say from code that
knows where it is than from a generic parser's expected-token sets.

Supported: ``@prefix``/``PREFIX``/``@base``, rules ``head :- body .`` (and facts
``head .``), triple atoms ``[?s, :p, ?o]`` (``a`` for ``rdf:type``), class and property
atoms ``:C[?x]`` / ``:p[?x, ?y]``, conjunction, ``FILTER``, ``BIND``, ``NOT``, ``NOT EXISTS
?v IN (...)`` and ``AGGREGATE(... ON ?g BIND F(?x) AS ?y)``. Anything else is
:class:`DatalogUnsupported`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from infergraph.reasoning.datalog.vocabulary import (
    AGGREGATES,
    FUNCTIONS,
    PREDEFINED,
    RDF_TYPE,
    UNSUPPORTED_WORDS,
)

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r]+|\n)
  | (?P<comment>\#[^\n]*)
  | (?P<iri><[^<>"{}|^`\\\s]*>)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<var>[?$][A-Za-z_][A-Za-z0-9_]*)
  | (?P<directive>@(?:prefix|base)\b)
  | (?P<lang>@[A-Za-z]+(?:-[A-Za-z0-9]+)*)
  | (?P<number>[+-]?(?:[0-9]+\.[0-9]*[eE][+-]?[0-9]+|\.?[0-9]+[eE][+-]?[0-9]+
                      |[0-9]*\.[0-9]+|[0-9]+))
  | (?P<pname>(?:[A-Za-z][\w\-.]*[\w\-]|[A-Za-z])?:(?:[\w\-:%]+(?:[\w\-.:%]*[\w\-:%])?)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>:-|\^\^|<=|>=|!=|&&|\|\||[\[\](),.=<>!+*/-])
    """,
    re.VERBOSE,
)


class DatalogError(ValueError):
    """A ``.dlog`` file that cannot run; the message starts ``file:line:column:``."""

    def __init__(self, file: str, line: int, column: int, message: str):
        self.file, self.line, self.column = file, line, column
        super().__init__(f"{file}:{line}:{column}: {message}")


class DatalogSyntaxError(DatalogError):
    pass


class DatalogUnsupported(DatalogError):
    """Valid RDFox Datalog outside the subset the local runner translates."""

    def __init__(self, file: str, line: int, column: int, construct: str):
        self.construct = construct
        super().__init__(
            file,
            line,
            column,
            f"unsupported construct {construct} (the local runner translates triple atoms, "
            "FILTER, BIND, NOT, NOT EXISTS and AGGREGATE): use runner 'kubernetes'",
        )


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    line: int
    column: int


@dataclass(frozen=True)
class Atom:
    """A triple pattern; terms are SPARQL term text (``?x``, ``<iri>``, ``"lit"^^<dt>``)."""

    s: str
    p: str
    o: str
    line: int

    @property
    def key(self) -> str:
        """What the atom reads or writes: ``<p>``, ``<rdf:type> <C>``, or ``*`` for any."""
        if self.p.startswith("?"):
            return "*"
        if self.p == f"<{RDF_TYPE}>" and not self.o.startswith("?"):
            return f"{self.p} {self.o}"
        return self.p

    @property
    def variables(self) -> set[str]:
        return {t for t in (self.s, self.p, self.o) if t.startswith("?")}

    def sparql(self) -> str:
        return f"{self.s} {self.p} {self.o} ."


@dataclass(frozen=True)
class Negation:
    atoms: tuple[Atom, ...]
    line: int


@dataclass(frozen=True)
class Aggregate:
    atoms: tuple[Atom, ...]
    group: tuple[str, ...]
    bindings: tuple[tuple[str, str], ...]  # (SPARQL aggregate expression, ?variable)
    line: int


@dataclass(frozen=True)
class Filter:
    expression: str
    line: int


@dataclass(frozen=True)
class Bind:
    expression: str
    variable: str
    line: int


Literal = Atom | Negation | Aggregate | Filter | Bind


@dataclass
class Rule:
    head: list[Atom]
    body: list[Literal]
    file: str
    line: int
    text: str = ""

    @property
    def positive(self) -> list[Atom]:
        return [b for b in self.body if isinstance(b, Atom)]


@dataclass
class Program:
    rules: list[Rule] = field(default_factory=list)


def parse_datalog(text: str, file: str = "rules.dlog") -> Program:
    """Parse one file; :class:`DatalogSyntaxError` / :class:`DatalogUnsupported` name the spot."""
    return _Parser(text, file).program()


def _tokens(text: str, file: str) -> list[Token]:
    tokens: list[Token] = []
    line, start, pos = 1, 0, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise DatalogSyntaxError(file, line, pos - start + 1, f"unexpected {text[pos]!r}")
        kind = m.lastgroup or ""
        if kind == "ws" and m.group() == "\n":
            line, start = line + 1, m.end()
        elif kind not in ("ws", "comment"):
            tokens.append(Token(kind, m.group(), line, pos - start + 1))
        pos = m.end()
    tokens.append(Token("end", "", line, pos - start + 1))
    return tokens


class _Parser:
    def __init__(self, text: str, file: str):
        self.file = file
        self.lines = text.splitlines()
        self.tokens = _tokens(text, file)
        self.i = 0
        self.prefixes = dict(PREDEFINED)
        self.base = ""

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, message: str, tok: Token | None = None) -> DatalogSyntaxError:
        tok = tok or self.tok
        return DatalogSyntaxError(self.file, tok.line, tok.column, message)

    def unsupported(self, construct: str, tok: Token | None = None) -> DatalogUnsupported:
        tok = tok or self.tok
        return DatalogUnsupported(self.file, tok.line, tok.column, construct)

    def expect(self, text: str) -> Token:
        if self.tok.text != text:
            got = repr(self.tok.text) if self.tok.kind != "end" else "end of file"
            raise self.error(f"expected {text!r}, got {got}")
        return self.next()

    def word(self, *words: str) -> bool:
        return self.tok.kind in ("name", "directive") and self.tok.text.upper() in words

    # -- document ----------------------------------------------------------------------------

    def program(self) -> Program:
        program = Program()
        while self.tok.kind != "end":
            if self.word("@PREFIX", "PREFIX"):
                self.prefix()
            elif self.word("@BASE", "BASE"):
                sparql_style = self.next().kind == "name"
                self.base = self.iri(self.expect_kind("iri"))[1:-1]
                if not sparql_style:
                    self.expect(".")
            else:
                program.rules.append(self.rule())
        return program

    def expect_kind(self, kind: str) -> Token:
        if self.tok.kind != kind:
            raise self.error(f"expected {kind}, got {self.tok.text or 'end of file'!r}")
        return self.next()

    def prefix(self) -> None:
        sparql_style = self.next().kind == "name"
        name = self.expect_kind("pname")
        if not name.text.endswith(":") or name.text.count(":") != 1:
            raise self.error(f"expected a prefix name like 'ex:', got {name.text!r}", name)
        self.prefixes[name.text[:-1]] = self.iri(self.expect_kind("iri"))[1:-1]
        if not sparql_style:
            self.expect(".")

    def rule(self) -> Rule:
        first = self.tok
        head = [self.atom()]
        while self.tok.text == ",":
            self.next()
            head.append(self.atom())
        body: list[Literal] = []
        if self.tok.text == ":-":
            self.next()
            body.append(self.literal())
            while self.tok.text == ",":
                self.next()
                body.append(self.literal())
        if self.tok.text != ".":
            got = self.tok.text or "end of file"
            raise self.error(f"expected ',' or '.' to end the rule, got {got!r}")
        last = self.next()
        text = "\n".join(self.lines[first.line - 1 : last.line])
        rule = Rule(head, body, self.file, first.line, text)
        self.check_safe(rule, first)
        return rule

    def check_safe(self, rule: Rule, where: Token) -> None:
        bound = {t for a in rule.positive for t in (a.s, a.p, a.o) if t.startswith("?")}
        bound |= {b.variable for b in rule.body if isinstance(b, Bind)}
        for agg in (b for b in rule.body if isinstance(b, Aggregate)):
            bound |= set(agg.group) | {var for _, var in agg.bindings}
        for atom in rule.head:
            for term in (atom.s, atom.p, atom.o):
                if term.startswith("?") and term not in bound:
                    raise self.error(
                        f"head variable {term} is not bound by the body (an unsafe rule)", where
                    )

    # -- atoms and terms ---------------------------------------------------------------------

    def atom(self) -> Atom:
        start = self.tok
        if start.text == "[":
            self.next()
            terms = [self.term(position=0)]
            while self.tok.text == ",":
                self.next()
                terms.append(self.term(position=len(terms)))
            self.expect("]")
            if len(terms) == 4:
                raise self.unsupported("quad atom [s, p, o, g] (named graphs)", start)
            if len(terms) != 3:
                raise self.error(f"a triple atom has 3 terms, got {len(terms)}", start)
            return Atom(*terms, line=start.line)
        if start.kind in ("pname", "iri"):
            name = self.iri(self.next())
            if self.tok.text != "[":
                raise self.error(f"expected '[' after {start.text} to make an atom")
            self.next()
            args = [self.term(position=0)]
            while self.tok.text == ",":
                self.next()
                args.append(self.term(position=2))
            self.expect("]")
            if len(args) == 1:
                return Atom(args[0], f"<{RDF_TYPE}>", name, line=start.line)
            if len(args) == 2:
                return Atom(args[0], name, args[1], line=start.line)
            raise self.unsupported(f"tuple table atom {start.text}[...] of arity {len(args)}")
        if start.kind == "name" and self.tokens[self.i + 1].text in ("[", "("):
            raise self.unsupported(f"tuple table or built-in atom {start.text}", start)
        raise self.error(f"expected an atom such as [?s, :p, ?o], got {start.text!r}")

    def term(self, position: int) -> str:
        tok = self.next()
        if tok.kind == "var":
            return "?" + tok.text[1:]
        if tok.kind in ("iri", "pname"):
            return self.iri(tok)
        if tok.kind == "name" and tok.text == "a" and position == 1:
            return f"<{RDF_TYPE}>"
        if tok.kind == "name" and tok.text in ("true", "false"):
            return tok.text
        if tok.kind == "number":
            return tok.text
        if tok.kind == "string":
            return self.literal_suffix(tok.text)
        if tok.text == "[" or tok.text.startswith("_:"):
            raise self.unsupported("blank node", tok)
        raise self.error(f"expected a term (variable, IRI or literal), got {tok.text!r}", tok)

    def literal_suffix(self, text: str) -> str:
        if self.tok.kind == "lang":
            return text + self.next().text
        if self.tok.text == "^^":
            self.next()
            tok = self.next()
            if tok.kind not in ("iri", "pname"):
                raise self.error("expected a datatype IRI after '^^'", tok)
            return f"{text}^^{self.iri(tok)}"
        return text

    def iri(self, tok: Token) -> str:
        if tok.kind == "iri":
            value = tok.text[1:-1]
            if self.base and ":" not in value:
                value = self.base + value
            return f"<{value}>"
        prefix, _, local = tok.text.partition(":")
        if prefix not in self.prefixes:
            raise self.error(f"undeclared prefix '{prefix}:'", tok)
        return f"<{self.prefixes[prefix]}{local}>"

    # -- body literals -----------------------------------------------------------------------

    def literal(self) -> Literal:
        tok = self.tok
        upper = tok.text.upper() if tok.kind == "name" else ""
        if upper == "NOT":
            return self.negation()
        if upper == "FILTER":
            self.next()
            self.expect("(")
            return Filter(self.expression(stop=(")",)), tok.line)
        if upper == "BIND":
            self.next()
            self.expect("(")
            expression = self.expression(stop=("AS",))
            self.expect_word("AS")
            variable = self.term(position=0)
            if not variable.startswith("?"):
                raise self.error("BIND needs AS ?variable", tok)
            self.expect(")")
            return Bind(expression, variable, tok.line)
        if upper == "AGGREGATE":
            return self.aggregate()
        if upper in UNSUPPORTED_WORDS:
            raise self.unsupported(UNSUPPORTED_WORDS[upper], tok)
        return self.atom()

    def expect_word(self, word: str) -> Token:
        if not self.word(word):
            raise self.error(f"expected {word}, got {self.tok.text or 'end of file'!r}")
        return self.next()

    def atoms_group(self) -> tuple[Atom, ...]:
        if self.tok.text != "(":
            return (self.atom(),)
        self.next()
        atoms = [self.atom()]
        while self.tok.text == ",":
            self.next()
            atoms.append(self.atom())
        self.expect(")")
        return tuple(atoms)

    def negation(self) -> Negation:
        tok = self.next()
        if self.word("EXISTS"):
            self.next()
            while self.tok.kind == "var":
                self.next()
                if self.tok.text == ",":
                    self.next()
            self.expect_word("IN")
        return Negation(self.atoms_group(), tok.line)

    def aggregate(self) -> Aggregate:
        tok = self.next()
        self.expect("(")
        atoms = [self.atom()]
        while self.tok.text == ",":
            self.next()
            atoms.append(self.atom())
        group: list[str] = []
        if self.word("ON"):
            self.next()
            while self.tok.kind == "var":
                group.append("?" + self.next().text[1:])
        bindings = []
        while self.word("BIND"):
            self.next()
            fn = self.next()
            if fn.kind != "name" or fn.text.upper() not in AGGREGATES:
                raise self.unsupported(f"aggregate function {fn.text}", fn)
            self.expect("(")
            inner = self.expression(stop=(")",))
            self.expect_word("AS")
            variable = self.term(position=0)
            bindings.append((f"{fn.text.upper()}({inner})", variable))
        self.expect(")")
        if not bindings:
            raise self.error("AGGREGATE needs at least one BIND f(...) AS ?v", tok)
        return Aggregate(tuple(atoms), tuple(group), tuple(bindings), tok.line)

    def expression(self, stop: tuple[str, ...]) -> str:
        """SPARQL text of an expression up to an unnested ``stop`` (left unconsumed for AS,
        consumed for ``)``), prefixed names expanded and function names checked."""
        out: list[str] = []
        depth = 0
        while True:
            tok = self.tok
            if tok.kind == "end":
                raise self.error(f"unterminated expression: expected {' or '.join(stop)}")
            if depth == 0 and (tok.text in stop or (tok.kind == "name" and tok.text in stop)):
                if tok.text == ")":
                    self.next()
                break
            if tok.text == ".":
                raise self.error("'.' inside an expression: missing ')'?")
            self.next()
            if tok.text == "(":
                depth += 1
            elif tok.text == ")":
                depth -= 1
            if tok.kind == "var":
                out.append("?" + tok.text[1:])
            elif tok.kind in ("iri", "pname"):
                out.append(self.iri(tok))
            elif tok.kind == "string":
                out.append(self.literal_suffix(tok.text))
            elif tok.kind == "name":
                out.append(self.function_or_word(tok))
            elif tok.text == "(" and out and (out[-1][-1].isalpha() or out[-1][-1] == ">"):
                out[-1] += "("  # SPARQL wants a function's '(' right after its name
            else:
                out.append(tok.text)
        if not out:
            raise self.error("empty expression")
        return " ".join(out)

    def function_or_word(self, tok: Token) -> str:
        upper = tok.text.upper()
        if upper in ("TRUE", "FALSE"):
            return tok.text.lower()
        if upper == "IN" or (upper == "NOT" and self.tok.text in ("(", "IN")):
            return upper
        if upper == "EXISTS" or (upper == "NOT" and self.word("EXISTS")):
            raise self.unsupported("EXISTS inside an expression (use NOT EXISTS ... IN)", tok)
        if self.tok.text == "(":
            if upper in FUNCTIONS:
                return upper
            raise self.unsupported(f"function {tok.text}", tok)
        raise self.error(f"unexpected word {tok.text!r} in an expression", tok)
