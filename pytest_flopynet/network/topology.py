"""Topologies as networkx graphs in Mininet's vocabulary: hosts, switches, links with bw/delay/loss.

Hosts are `fl_server`, `client_1..client_<n>` and idle `host_<k>` up to node_count; switches are
`s1..s<k>`; a link is named `<a>-<b>` after its ends (host first).
"""
from __future__ import annotations

import json
from pathlib import Path

import networkx as nx

from ..errors import FlopynetError
from ..netmodel import SERVER, Link, Topology  # noqa: F401 (re-exported)


class TopologyError(FlopynetError):
    pass


def host_names(num_clients: int, node_count: int) -> list[str]:
    idle = max(node_count - num_clients - 1, 0)
    return [SERVER, *(f"client_{i}" for i in range(1, num_clients + 1)), *(f"host_{i}" for i in range(1, idle + 1))]


def _graph(hosts, switches, attachments, trunks, bw, delay) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(switches, kind="switch")
    g.add_nodes_from(hosts, kind="host")
    for a, b in [*attachments, *trunks]:
        g.add_edge(a, b, link=Link(f"{a}-{b}", a, b, float(bw), float(delay)))
    return g


def star(hosts: list[str], switch_count: int, bw: float, delay: float) -> nx.Graph:
    """One core switch s1 with the server; access switches s2..sk around it carry the clients."""
    switches = [f"s{i}" for i in range(1, switch_count + 1)]
    access = switches[1:] or switches
    attach = [(SERVER, "s1")] + [(h, access[i % len(access)]) for i, h in enumerate(hosts[1:])]
    return _graph(hosts, switches, attach, [("s1", s) for s in switches[1:]], bw, delay)


def mesh(hosts: list[str], switch_count: int, bw: float, delay: float) -> nx.Graph:
    """Switches fully meshed; the server on s1, clients spread from s2 round-robin."""
    switches = [f"s{i}" for i in range(1, switch_count + 1)]
    order = switches[1:] + switches[:1]
    attach = [(SERVER, "s1")] + [(h, order[i % len(order)]) for i, h in enumerate(hosts[1:])]
    trunks = [(a, b) for i, a in enumerate(switches) for b in switches[i + 1:]]
    return _graph(hosts, switches, attach, trunks, bw, delay)


def tree(hosts: list[str], switch_count: int, bw: float, delay: float) -> nx.Graph:
    """A binary tree of switches (s<i>'s parent is s<i//2>); the server at the root, clients on leaves."""
    switches = [f"s{i}" for i in range(1, switch_count + 1)]
    trunks = [(f"s{i // 2}", f"s{i}") for i in range(2, switch_count + 1)]
    leaves = [s for i, s in enumerate(switches, 1) if 2 * i > switch_count] if switch_count > 1 else switches
    attach = [(SERVER, "s1")] + [(h, leaves[i % len(leaves)]) for i, h in enumerate(hosts[1:])]
    return _graph(hosts, switches, attach, trunks, bw, delay)


GNS3_SWITCH_TYPES = ("ethernet_switch", "ethernet_hub", "frame_relay_switch", "atm_switch")


def read_gns3(path: Path) -> nx.Graph:
    """A GNS3 project file (.gns3): its nodes by name and its links. Built-in switch and hub nodes are
    switches; other nodes are hosts or switches by their names (see `custom`)."""
    project = json.loads(path.read_text())
    topo = project["topology"]
    g = nx.Graph()
    names = {}
    for node in topo.get("nodes", []):
        names[node["node_id"]] = node["name"]
        attrs = {"kind": "switch"} if node.get("node_type") in GNS3_SWITCH_TYPES else {}
        g.add_node(node["name"], **attrs)
    for link in topo.get("links", []):
        ends = [names[end["node_id"]] for end in link["nodes"]]
        if len(ends) != 2:
            raise KeyError(f"link {link.get('link_id')} has {len(ends)} ends")
        g.add_edge(*ends)
    return g


def read_graph(path: Path) -> nx.Graph:
    """A custom topology file: networkx node-link JSON, GraphML, GML, or a GNS3 project file (.gns3)."""
    try:
        if path.suffix == ".gns3":
            return read_gns3(path)
        if path.suffix == ".json":
            return nx.node_link_graph(json.loads(path.read_text()), edges="links")
        if path.suffix == ".graphml":
            return nx.read_graphml(path)
        if path.suffix == ".gml":
            return nx.read_gml(path)
    except (OSError, ValueError, KeyError, nx.NetworkXError) as exc:
        raise TopologyError(f"{path}: cannot read the topology: {exc}") from None
    raise TopologyError(f"{path}: unknown topology format {path.suffix!r} (use .json node-link, .graphml, .gml "
                        "or a GNS3 project .gns3)")


def custom(graph: nx.Graph, required_hosts: list[str], bw: float, delay: float, source: str = "<graph>") -> nx.Graph:
    """Normalise a user graph: node kinds, Link objects with the config's defaults where unset."""
    g = nx.Graph()
    for n, d in graph.nodes(data=True):
        name = str(n)
        kind = d.get("kind") or ("host" if name == SERVER or name.startswith(("client_", "host_")) else "switch")
        g.add_node(name, kind=kind)
    for u, v, d in graph.edges(data=True):
        u, v = str(u), str(v)
        if g.nodes[v]["kind"] == "host" and g.nodes[u]["kind"] == "switch":
            u, v = v, u
        g.add_edge(u, v, link=Link(str(d.get("name", f"{u}-{v}")), u, v, float(d.get("bw_mbps", bw)),
                                   float(d.get("delay_ms", delay)), float(d.get("loss", 0.0))))
    missing = [h for h in required_hosts if h not in g]
    if missing:
        raise TopologyError(f"{source}: the topology lacks hosts {', '.join(missing)}")
    if g.number_of_nodes() and not nx.is_connected(g):
        raise TopologyError(f"{source}: the topology is not connected")
    return g


BUILDERS = {"star": star, "mesh": mesh, "tree": tree}


def build_topology(config, base_dir: Path | None = None, graph: nx.Graph | None = None) -> Topology:
    """The topology of a ScenarioConfig (or of a networkx graph given for a custom one)."""
    net = config.network_config
    n = config.num_clients
    hosts = host_names(n, net.node_count)
    if graph is not None or net.topology_type == "custom":
        source, path = "<graph>", None
        if graph is None:
            path = Path(net.custom_topology_file)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            graph, source = read_graph(path), str(path)
        return Topology(custom(graph, hosts[: n + 1], net.link_bandwidth_mbps, net.base_latency_ms, source),
                        config.name, path, net.tcp_congestion_control)
    return Topology(BUILDERS[net.topology_type](hosts, net.switch_count, net.link_bandwidth_mbps, net.base_latency_ms),
                    config.name, congestion_control=net.tcp_congestion_control)
