"""The ranking stage: candidate sources merged, then a DCN ranker over the merged candidates."""
