"""The SDN controller model the simulated backend asks for paths: shortest paths by latency over
the links it believes up (a failure is seen `detection_delay` seconds late), recomputed whenever
its view changes; traffic_prioritization makes the backend serve FL flows before other traffic.
It keeps the counters a controller keeps: route computations, reroutes, view changes."""
from __future__ import annotations

from typing import Mapping

import networkx as nx

from ..netmodel import LinkState, Topology

Hop = tuple[str, str]  # (link name, node the traffic enters the link from)


class Controller:
    def __init__(self, topology: Topology, controller_type: str = "ryu", qos_enabled: bool = False,
                 traffic_prioritization: bool = False, detection_delay: float = 0.0):
        self.topology = topology
        self.detection_delay = detection_delay  # seconds before a failed link is noticed and routed around
        self.controller_type = controller_type
        self.qos_enabled = qos_enabled
        self.traffic_prioritization = traffic_prioritization
        self._routes: dict[tuple[str, str], list[Hop] | None] = {}
        self._graph: nx.Graph | None = None
        self._tree: dict[str, list[str]] | None = None  # the server's shortest-path tree, per view
        self._reach: set[str] | None = None  # the nodes in it
        self.stats = {"flows": 0, "route_computations": 0, "reroutes": 0, "network_changes": 0}
        self.link_utilization: dict[str, float] = {}  # last sample the backend reported

    def network_changed(self, links: Mapping[str, LinkState]) -> None:
        """Install the new link states; routes are recomputed on demand and reroutes counted."""
        self.stats["network_changes"] += 1
        old = self._routes
        g = nx.Graph()
        g.add_nodes_from(self.topology.graph.nodes)
        for u, v, d in self.topology.graph.edges(data=True):
            state = links[d["link"].name]
            if state.up:
                g.add_edge(u, v, name=d["link"].name, delay=state.delay_ms)
        self._graph, self._routes, self._tree, self._reach = g, {}, None, None
        for key, path in old.items():
            if self.route(*key) != path:
                self.stats["reroutes"] += 1

    def route(self, src: str, dst: str) -> list[Hop] | None:
        """Hops from src to dst along the lowest-latency path of up links; None if unreachable. Paths to
        and from the FL server come from one shortest-path tree rooted at it (an upload takes its download's
        path back), so a round's routes cost one Dijkstra, not one per client."""
        key = (src, dst)
        if key not in self._routes:
            self.stats["route_computations"] += 1
            server = self.topology.server
            if server in key and src != dst:
                other = dst if src == server else src
                nodes = self._server_tree().get(other)
                if nodes is not None and src != server:
                    nodes = nodes[::-1]
            else:
                try:
                    nodes = nx.shortest_path(self._graph, src, dst, weight="delay")
                except (nx.NetworkXNoPath, nx.NodeNotFound):
                    nodes = None
            self._routes[key] = None if nodes is None else [(self._graph.edges[a, b]["name"], a)
                                                            for a, b in zip(nodes, nodes[1:])]
        return self._routes[key]

    def reachable(self, src: str) -> set[str]:
        """The nodes src reaches over the links up now (itself included)."""
        if src == self.topology.server:
            if self._reach is None:
                self._reach = set(self._server_tree())
            return self._reach
        return nx.node_connected_component(self._graph, src) if src in self._graph else set()

    def _server_tree(self) -> dict[str, list[str]]:
        """Lowest-latency paths from the server to every node it reaches over the links up now."""
        if self._tree is None:
            server = self.topology.server
            self._tree = nx.single_source_dijkstra_path(self._graph, server, weight="delay") \
                if server in self._graph else {}
        return self._tree
