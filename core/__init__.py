"""The kernel every layer shares: the records that flow between layers, the error tree,
config field types and the clock. It imports no other layer of dutyd."""
