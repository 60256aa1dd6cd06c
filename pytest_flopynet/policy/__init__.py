"""The policy engine: declarative policies that screen client updates, quarantine, keep trust scores."""
from .engine import POLICY_FIELDS, Policy, PolicyEngine, flag_updates, load_policies

__all__ = ["POLICY_FIELDS", "Policy", "PolicyEngine", "flag_updates", "load_policies"]
