# A chain extends by a later transaction whose originator is the chain's beneficiary,
# while it is shorter than 30 transactions. Dates strictly increase, so chains cannot loop.
PREFIX prop: <http://oxfordsemantic.tech/transactions/properties#>
PREFIX type: <http://oxfordsemantic.tech/transactions/classes#>

INSERT {
  ?next a type:Chain ;
    prop:chainStart ?start ;
    prop:chainEnd ?t ;
    prop:chainPrevious ?chain ;
    prop:chainLength ?nextLength ;
    prop:chainOriginator ?originator ;
    prop:chainBeneficiary ?nextBeneficiary ;
    prop:chainLastDate ?date ;
    prop:chainMinAmount ?nextMin .
}
WHERE {
  ?chain a type:Chain ;
    prop:chainStart ?start ;
    prop:chainLength ?length ;
    prop:chainOriginator ?originator ;
    prop:chainBeneficiary ?beneficiary ;
    prop:chainLastDate ?lastDate ;
    prop:chainMinAmount ?min .
  FILTER(?length < 30)
  ?t a type:Transaction ;
    prop:hasOriginator ?beneficiary ;
    prop:hasBeneficiary ?nextBeneficiary ;
    prop:hasAmount ?amount ;
    prop:hasDate ?date .
  FILTER(?date > ?lastDate)
  BIND(?length + 1 AS ?nextLength)
  BIND(IF(?amount < ?min, ?amount, ?min) AS ?nextMin)
  BIND(IRI(CONCAT(STR(?chain), ".", STRAFTER(STR(?t), "#"))) AS ?next)
}
