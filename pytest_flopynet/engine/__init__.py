"""Scenario time, the event scheduler and the orchestrator."""
