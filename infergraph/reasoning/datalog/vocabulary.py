"""The words of the RDFox Datalog subset: predefined prefixes, functions, refused keywords."""

from __future__ import annotations

RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
PREDEFINED = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "owl": "http://www.w3.org/2002/07/owl#",
}
#: SPARQL built-ins that mean the same in RDFox; anything else in an expression is refused.
_FUNCTION_NAMES = """
STR LANG LANGMATCHES DATATYPE BOUND IRI URI BNODE RAND ABS CEIL FLOOR ROUND
CONCAT STRLEN UCASE LCASE ENCODE_FOR_URI CONTAINS STRSTARTS STRENDS STRBEFORE
STRAFTER YEAR MONTH DAY HOURS MINUTES SECONDS TIMEZONE TZ NOW UUID STRUUID MD5
SHA1 SHA256 SHA384 SHA512 COALESCE IF STRLANG STRDT SAMETERM ISIRI ISURI ISBLANK
ISLITERAL ISNUMERIC REGEX SUBSTR REPLACE IN
"""
FUNCTIONS = frozenset(_FUNCTION_NAMES.split())
AGGREGATES = frozenset({"COUNT", "SUM", "MIN", "MAX", "AVG", "SAMPLE", "GROUP_CONCAT"})
#: Words that start a body literal we do not translate, with what to say about them.
UNSUPPORTED_WORDS = {
    "OPTIONAL": "OPTIONAL",
    "MINUS": "MINUS",
    "UNION": "UNION",
    "VALUES": "VALUES",
    "SERVICE": "SERVICE",
    "GRAPH": "GRAPH (named graphs)",
    "EXISTS": "EXISTS without NOT",
    "AS": "AS outside BIND",
}
