"""Analysis of a finished execution: the results structure, gates and comparisons."""
