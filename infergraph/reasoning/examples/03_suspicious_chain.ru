# A chain that ends at a suspicious beneficiary is a SuspiciousChain.
PREFIX prop: <http://oxfordsemantic.tech/transactions/properties#>
PREFIX type: <http://oxfordsemantic.tech/transactions/classes#>

INSERT { ?chain a type:SuspiciousChain }
WHERE {
  ?chain a type:Chain ; prop:chainBeneficiary ?beneficiary .
  ?beneficiary prop:isSuspicious true .
}
