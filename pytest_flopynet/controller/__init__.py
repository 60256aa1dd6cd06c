"""SDN control: routing over the switch graph, statistics; the real Ryu app comes with the netns backend."""
from .routing import Controller

__all__ = ["Controller"]
