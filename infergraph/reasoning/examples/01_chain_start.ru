# A transaction from a suspicious originator starts a chain of length 1.
# Chain IRIs spell out their transactions (…#chain_tx1.tx7.tx9), so a chain is its path.
PREFIX prop: <http://oxfordsemantic.tech/transactions/properties#>
PREFIX type: <http://oxfordsemantic.tech/transactions/classes#>

INSERT {
  ?chain a type:Chain ;
    prop:chainStart ?t ;
    prop:chainEnd ?t ;
    prop:chainLength 1 ;
    prop:chainOriginator ?originator ;
    prop:chainBeneficiary ?beneficiary ;
    prop:chainLastDate ?date ;
    prop:chainMinAmount ?amount .
}
WHERE {
  ?t a type:Transaction ;
    prop:hasOriginator ?originator ;
    prop:hasBeneficiary ?beneficiary ;
    prop:hasAmount ?amount ;
    prop:hasDate ?date .
  ?originator prop:isSuspicious true .
  BIND(IRI(CONCAT("http://oxfordsemantic.tech/transactions/entities#chain_", STRAFTER(STR(?t), "#"))) AS ?chain)
}
