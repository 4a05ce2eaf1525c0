"""A deterministic synthetic transactions graph: parties (a few suspicious) paying each other.

Same seed, same size → byte-identical N-Triples, so tests and benchmarks can compare
against an independent computation on exactly the data the reasoner saw. The
vocabulary is the reference sample's (``fixtures/reasoning/small_triples.nt``) plus
``prop:isSuspicious``.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

E = "http://oxfordsemantic.tech/transactions/entities#"
P = "http://oxfordsemantic.tech/transactions/properties#"
C = "http://oxfordsemantic.tech/transactions/classes#"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
XSD = "http://www.w3.org/2001/XMLSchema#"
START = datetime(2021, 1, 1)
FIRST = ["Ada", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea"]
LAST = ["Moss", "Nagy", "Okafor", "Park", "Quinn", "Rossi", "Sato", "Tran", "Ueda", "Vega"]


@dataclass(frozen=True)
class Transaction:
    id: str
    originator: str
    beneficiary: str
    amount: int
    date: datetime


@dataclass
class Dataset:
    parties: list[str]
    suspicious: set[str]
    transactions: list[Transaction]

    def ntriples(self) -> Iterator[str]:
        rng = random.Random(len(self.parties))
        for party in self.parties:
            yield f"<{E}{party}> <{RDF_TYPE}> <{C}Party> .\n"
            yield f'<{E}{party}> <{P}hasFullName> "{rng.choice(FIRST)} {rng.choice(LAST)}" .\n'
            if party in self.suspicious:
                yield f'<{E}{party}> <{P}isSuspicious> "true"^^<{XSD}boolean> .\n'
        for t in self.transactions:
            s = f"<{E}{t.id}>"
            yield f"{s} <{RDF_TYPE}> <{C}Transaction> .\n"
            yield f"{s} <{P}hasOriginator> <{E}{t.originator}> .\n"
            yield f"{s} <{P}hasBeneficiary> <{E}{t.beneficiary}> .\n"
            yield f'{s} <{P}hasAmount> "{t.amount}"^^<{XSD}decimal> .\n'
            yield f'{s} <{P}hasDate> "{t.date.isoformat()}"^^<{XSD}dateTime> .\n'

    @property
    def triple_count(self) -> int:
        return 2 * len(self.parties) + len(self.suspicious) + 5 * len(self.transactions)


def generate(
    triples: int = 10_000,
    seed: int = 42,
    suspicious_fraction: float = 0.05,
    transactions_per_party: float = 3.0,
) -> Dataset:
    """About ``triples`` triples (1k to 1M and beyond); amounts 100-50,000 over one year.

    Payers and payees are uniform, so each party originates about
    ``transactions_per_party`` transactions and the number of chronological chains stays
    near e^d per start instead of exploding.
    """
    if triples < 20:
        raise ValueError("triples must be at least 20")
    rng = random.Random(seed)
    per_party = 2 + suspicious_fraction + 5 * transactions_per_party
    n_parties = max(int(triples / per_party), 4)
    n_transactions = max(int((triples - n_parties * (2 + suspicious_fraction)) / 5), 1)
    parties = [f"party_{i}" for i in range(n_parties)]
    n_suspicious = max(1, round(n_parties * suspicious_fraction))
    suspicious = set(rng.sample(parties, n_suspicious))
    transactions = []
    for i in range(n_transactions):
        originator, beneficiary = rng.sample(parties, 2)
        amount = rng.randint(100, 50_000)
        date = START + timedelta(seconds=rng.randrange(365 * 24 * 3600))
        transactions.append(Transaction(f"tx_{i}", originator, beneficiary, amount, date))
    return Dataset(parties, suspicious, transactions)


def write_example(
    dest: str | Path,
    triples: int = 10_000,
    seed: int = 42,
    credentials: Any = None,
    rules: str = "sparql",
    **options: Any,
) -> Dataset:
    """Write data, rules and queries to a local folder or an ``s3://bucket/prefix/``.

    ``rules``: ``"sparql"`` (``*.ru``, local runner only) or ``"datalog"`` (``chains.dlog``,
    the reference's format, which both runners run).
    """
    from infergraph.reasoning.examples import DATALOG_RULES, QUERIES, RULES

    forms = {"sparql": RULES, "datalog": DATALOG_RULES}
    if rules not in forms:
        raise ValueError(f"rules must be one of {sorted(forms)}, got {rules!r}")
    dataset = generate(triples, seed, **options)
    data = "".join(dataset.ntriples()).encode()
    files = {"transactions.nt": data}
    files.update({p.name: p.read_bytes() for p in [*forms[rules], *QUERIES]})
    dest = str(dest)
    if dest.startswith("s3://"):
        from infergraph.aws.clients import aws_client
        from infergraph.aws.storage import split_s3_uri

        bucket, prefix = split_s3_uri(dest if dest.endswith("/") else dest + "/")
        client = aws_client("s3", credentials)
        for name, body in files.items():
            client.put_object(Bucket=bucket, Key=prefix + name, Body=body)
    else:
        folder = Path(dest)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for name, body in files.items():
            (folder / name).write_bytes(body)
    return dataset
