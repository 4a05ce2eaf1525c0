# A chain whose smallest transaction exceeds the threshold (10,000) is a HighValueChain.
PREFIX prop: <http://oxfordsemantic.tech/transactions/properties#>
PREFIX type: <http://oxfordsemantic.tech/transactions/classes#>

INSERT { ?chain a type:HighValueChain }
WHERE {
  ?chain a type:Chain ; prop:chainMinAmount ?min .
  FILTER(?min > 10000)
}
