"""What a run leaves on disk: results, metrics and the resolved scenario."""
