"""The GNS3 backend: a scenario's topology as a GNS3 project, driven through gns3fy (GNS3 REST API v2).

`GNS3Network.create` connects to the server, makes a project named per worker and scenario, creates a
node per host and switch from the templates mapped to its role, links them as the topology says, and
sets each link's own delay and loss as GNS3 link filters; `build` (what a run calls) also starts the
nodes. Conditions become link filters (`delay`
[latency, jitter], `packet_loss`, `corrupt`, `frequency_drop`, `bpf`) or suspended links (failures,
partitions), composed as in the simulation: delays add, loss rates compound, down wins. Reverting a
condition sets every link it touched back to what the remaining conditions ask for. GNS3 filters take
whole milliseconds and whole percents, so values are rounded (with a warning when that changes one).

What GNS3 cannot do is a skip with the reason (UnavailableError), never a substitute: bandwidth
limits (no such filter), background floods, and moving FL traffic when the server cannot start the
nodes (the reason is the server's own).

Templates per role (`DEFAULT_TEMPLATES`, overridden by the scenario's `network_config.gns3_template`,
then by the `gns3_templates` option): `server`, `client`, `host` (idle hosts; default: the client's),
`switch` and `controller` (an SDN controller node linked to the first switch; none by default). A
`gns3_template` that is a plain string names the template of the FL nodes (server, clients, hosts).
The server's URL: the `gns3_url` option, else `gns3_template: {url: ...}`, else http://127.0.0.1:3080.
Credentials come from FLOPYNET_GNS3_USER and FLOPYNET_GNS3_PASSWORD only; they are never logged,
written, or shown in a message.

A local gns3-server for the tests lives in a virtual environment of its own
(`python -m pytest_flopynet.network.gns3 --setup-server`; `LocalGNS3Server` runs it).
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from ..credentials import split_credentials
from ..errors import FlopynetError, UnavailableError
from ..processes import free_port, stop_group
from .backend import Condition, Flow, NetworkStats, check_names
from .topology import Topology

DEFAULT_URL = "http://127.0.0.1:3080"
ROLES = ("server", "client", "host", "switch", "controller")
# VPCS ships with every GNS3 and is created without any image; "Ethernet switch" is GNS3's built-in
# layer-2 switch (it runs in Dynamips, present on every GNS3 VM). A server without Dynamips refuses
# it, and the build then skips with the server's reason: map `switch` to a template it can create
# (an Open vSwitch appliance, Docker or Qemu).
DEFAULT_TEMPLATES = {"server": "VPCS", "client": "VPCS", "host": None, "switch": "Ethernet switch", "controller": None}
SETTINGS_KEYS = (*ROLES, "url", "compute_id")
USER_ENV, PASSWORD_ENV = "FLOPYNET_GNS3_USER", "FLOPYNET_GNS3_PASSWORD"
SERVER_VERSION = "2.2.61"
TIMEOUT = 30.0  # seconds for one API call
# node types whose port count follows a property, and that property
_ADAPTER_TYPES = ("qemu", "docker", "virtualbox", "vmware")


@dataclass(frozen=True)
class LinkFilters(Condition):
    """A Condition with the GNS3 filters beyond delay, jitter and loss: `corrupt` (a share of
    packets corrupted), `frequency_drop` (drop every Nth packet; -1 drops all) and `bpf` (drop
    packets matching these BPF expressions). Other backends see a plain Condition."""

    corrupt: float = 0.0
    frequency_drop: int = 0
    bpf: tuple[str, ...] = ()


@dataclass(frozen=True)
class LinkFilterState:
    """What one link should be: its filters in GNS3's form and whether it is suspended."""

    filters: dict[str, list]
    suspend: bool


def truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on") if isinstance(value, str) else bool(value)


def parse_templates(value: Any, where: str) -> dict[str, Any]:
    """Settings from a gns3_template value: a template name (for the FL nodes) or a mapping of roles,
    url and compute_id; the gns3_templates option also takes 'role=name,role=name'."""
    if value is None or value == "" or value == {}:
        return {}
    if isinstance(value, dict):
        settings = dict(value)
    elif isinstance(value, str) and "=" in value:
        settings = {}
        for part in value.split(","):
            key, sep, name = part.partition("=")
            if not sep:
                raise FlopynetError(f"{where}: expected role=template pairs separated by commas, got {value!r}")
            settings[key.strip()] = name.strip() or None
    elif isinstance(value, str):
        settings = {"server": value, "client": value}
    else:
        raise FlopynetError(f"{where}: expected a template name or a mapping, got {type(value).__name__}")
    unknown = sorted(set(settings) - set(SETTINGS_KEYS))
    if unknown:
        raise FlopynetError(f"{where}: unknown keys {', '.join(unknown)} (known: {', '.join(SETTINGS_KEYS)})")
    return settings


def role_of(topology: Topology, node: str) -> str:
    if node in topology.switches:
        return "switch"
    if node == topology.server:
        return "server"
    return "client" if node in topology.clients else "host"


def compose(topology: Topology, conditions) -> dict[str, LinkFilterState]:
    """Each link's GNS3 state under its own delay and loss and the given conditions: delays and
    jitters add, loss and corruption rates compound, the most frequent drop wins (-1: all), BPF
    expressions accumulate, down wins."""
    states = {}
    for name, link in topology.links.items():
        delay, jitter, keep, intact, every, bpf, down = link.delay_ms, 0.0, 1.0 - link.loss, 1.0, 0, [], False
        for c in conditions:
            if name not in c.links:
                continue
            delay += c.extra_delay_ms
            jitter += c.jitter_ms
            keep *= 1.0 - c.loss
            intact *= 1.0 - getattr(c, "corrupt", 0.0)
            n = int(getattr(c, "frequency_drop", 0))
            if n == -1 or every == -1:
                every = -1
            elif n > 0:
                every = min(every, n) if every > 0 else n
            bpf += [e for e in getattr(c, "bpf", ()) if e not in bpf]
            down = down or c.down
        filters: dict[str, list] = {}
        latency = _whole(delay, "delay", name, "ms")
        if latency > 0:  # GNS3 drops a delay filter whose latency is 0
            filters["delay"] = [latency, _whole(jitter, "jitter", name, "ms")]
        for kind, share in (("packet_loss", 1.0 - keep), ("corrupt", 1.0 - intact)):
            percent = _whole(share * 100, kind, name, "%")
            if percent > 0:
                filters[kind] = [percent]
        if every:
            filters["frequency_drop"] = [every]
        if bpf:
            filters["bpf"] = ["\n".join(bpf)]
        states[name] = LinkFilterState(filters, down)
    return states


def _whole(value: float, what: str, link: str, unit: str) -> int:
    """GNS3 filters take integers (the server truncates anything else): round, and say so."""
    n = round(value)
    if abs(value - n) > 1e-6:
        warnings.warn(f"GNS3 link {link}: {what} {value:.4g} {unit} set as {n} {unit} (GNS3 filters take whole "
                      f"{'percents' if unit == '%' else 'milliseconds'})", stacklevel=3)
    return n


class GNS3Network:
    """The Backend protocol on a GNS3 server (see the module's docstring)."""

    name = "gns3"

    def __init__(self, clock, controller=None, *, worker: str = "main", options: dict | None = None):
        self.clock = clock
        self.controller = controller
        self.worker = worker
        self.options = dict(options or {})
        self.keep = truthy(self.options.get("gns3_keep", False))
        self.topology: Topology | None = None
        self.url = DEFAULT_URL
        self.templates: dict[str, str | None] = dict(DEFAULT_TEMPLATES)
        self.compute_id = "local"
        self.connector = None
        self.project = None  # gns3fy Project
        self.project_name: str | None = None
        self.nodes: dict[str, dict] = {}  # topology node name -> the server's node
        self.link_ids: dict[str, str] = {}  # topology link name -> GNS3 link id
        self.applied: dict[str, LinkFilterState] = {}  # what the server has now, per link
        self._conditions: dict[int, Condition] = {}
        self._next_handle = 1
        self._started = False
        self._stopped_hosts: dict[int, tuple[str, ...]] = {}
        self._filter_cache: dict[str, bool] = {}
        self.timings: dict[str, float] = {}

    # -- settings and connection --------------------------------------------------------------
    def _settings(self, topology: Topology) -> None:
        scenario = parse_templates(self.options.get("gns3_template"), "network_config.gns3_template")
        option = parse_templates(self.options.get("gns3_templates"), "the gns3_templates option")
        merged = {**scenario, **option}
        # credentials in the URL go to the connection, never into a message: self.url is the URL without them
        self.url, self.url_credentials = split_credentials(
            str(self.options.get("gns3_url") or merged.get("url") or DEFAULT_URL).rstrip("/"))
        self.compute_id = str(merged.get("compute_id") or "local")
        self.templates = {role: merged.get(role, DEFAULT_TEMPLATES[role]) for role in ROLES}
        if not self.templates["host"]:
            self.templates["host"] = self.templates["client"]

    def connect(self) -> dict:
        """Connect to the server; its version answer. No server is an UnavailableError with the URL
        and the error; refused credentials are an error naming the variables (never their values)."""
        try:
            from gns3fy import Gns3Connector
        except ImportError as exc:
            raise UnavailableError(f"the gns3 backend needs gns3fy ({exc}): pip install 'pytest-flopynet[gns3]'") from None
        _check_pydantic()
        user, password = self.url_credentials
        if user is None:
            user = os.environ.get(USER_ENV) or None
            password = os.environ.get(PASSWORD_ENV) if user else None
        self.connector = Gns3Connector(url=self.url, user=user, cred=password)
        try:
            response = self.connector.session.get(f"{self.connector.base_url}/version", timeout=5)
        except Exception as exc:  # requests' connection errors, timeouts, bad URLs
            raise UnavailableError(f"no GNS3 server at {self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 401:
            given = ("from the URL" if self.url_credentials[0] else f"from {USER_ENV}/{PASSWORD_ENV}") if user \
                else f"none given: set {USER_ENV} and {PASSWORD_ENV}"
            raise FlopynetError(f"the GNS3 server at {self.url} refused the credentials ({given})")
        if response.status_code != 200:
            raise UnavailableError(f"no GNS3 server at {self.url}: GET /v2/version answered {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise UnavailableError(f"no GNS3 server at {self.url}: GET /v2/version did not answer JSON") from None

    def _call(self, method: str, path: str, what: str, **kwargs):
        try:
            return self.connector.http_call(method, f"{self.connector.base_url}{path}", **kwargs).json()
        except Exception as exc:
            raise FlopynetError(f"GNS3 server {self.url}: {what}: {_reason(exc)}") from None

    def server_templates(self) -> dict[str, dict]:
        return {t["name"]: t for t in self._call("get", "/templates", "listing templates")}

    def _resolve_templates(self, needed: set[str]) -> dict[str, dict]:
        """Template name -> the server's template, for the roles the topology needs; a name the server
        lacks is an error that lists the templates it has."""
        available = self.server_templates()
        names = {self.templates[role] for role in needed}
        if None in names:
            missing = sorted(role for role in needed if self.templates[role] is None)
            raise FlopynetError(f"no GNS3 template mapped for {', '.join(missing)} (gns3_template: {{role: name}})")
        unknown = sorted(n for n in names if n not in available)
        if unknown:
            roles = sorted(role for role in needed if self.templates[role] in unknown)
            raise FlopynetError(f"GNS3 server {self.url} has no template {', '.join(map(repr, unknown))} "
                                f"(mapped for {', '.join(roles)}); its templates: {', '.join(sorted(available))}")
        return {n: available[n] for n in names}

    # -- Backend protocol ---------------------------------------------------------------------
    def unsupported(self, features: frozenset[str]) -> str | None:
        """Why conditions with these features cannot run on GNS3 (a skip reason), or None."""
        if "bandwidth_mbps" in features:
            return self._no_bandwidth()
        if "background" in features:
            return self._no_background()
        return None

    @staticmethod
    def _no_bandwidth() -> str:
        return ("the gns3 backend cannot limit bandwidth: GNS3 link filters offer delay, packet_loss, corrupt, "
                "frequency_drop and bpf only")

    @staticmethod
    def _no_background() -> str:
        return "the gns3 backend cannot run background floods: they need traffic generators inside running nodes"

    def build(self, topology: Topology) -> None:
        """Make the project (`create`) and start its nodes (`start`), ready for FL traffic. Where the
        server cannot start them, an UnavailableError carries its reason; where it can, one says that
        moving FL traffic between GNS3 nodes is not part of this version yet. Either way the project
        is deleted (unless gns3_keep) and the run skips before its first round."""
        self.create(topology)
        try:
            self.start()
            raise UnavailableError(self._no_traffic())
        except BaseException:
            self.teardown()
            raise

    def _no_traffic(self) -> str:
        return (f"the gns3 backend started the nodes of {self.project_name}, but moving FL traffic between GNS3 nodes "
                "(the FL node program inside the templates) is not part of this version yet")

    def create(self, topology: Topology) -> None:
        """Make the project, stopped: nodes, links, and each link's own filters (see the module
        docstring). Everything it made is deleted again when this fails."""
        self.topology = topology
        self._settings(topology)
        t0 = time.perf_counter()
        self.connect()
        try:
            if topology.source is not None and topology.source.suffix == ".gns3":
                self._import(topology)
            else:
                self._create(topology)
            self._sync(compose(topology, []))
            self.timings["create_s"] = time.perf_counter() - t0
        except BaseException:
            self.teardown()
            raise

    def _project_name(self, topology: Topology) -> str:
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.worker}-{topology.name}").strip("_")
        return f"flopynet-{label}-{secrets.token_hex(3)}"

    def _create(self, topology: Topology) -> None:
        from gns3fy import Link, Node, Project
        roles = {n: role_of(topology, n) for n in topology.graph}
        if topology.switches and self.templates["controller"]:
            roles["controller"] = "controller"
        templates = self._resolve_templates(set(roles.values()))
        self.project_name = self._project_name(topology)
        self.project = Project(name=self.project_name, connector=self.connector)
        _gns3(lambda: self.project.create(), f"{self.url}: creating project {self.project_name}")
        degree = dict(topology.graph.degree())
        if "controller" in roles:
            degree["controller"], degree[topology.switches[0]] = 1, degree[topology.switches[0]] + 1
        for i, (name, role) in enumerate(roles.items()):
            angle = 2 * math.pi * i / len(roles)
            template = templates[self.templates[role]]
            node = Node(project_id=self.project.project_id, connector=self.connector, name=name,
                        template_id=template["template_id"], compute_id=self.compute_id,
                        x=int(300 * math.cos(angle)), y=int(300 * math.sin(angle)))
            try:
                node.create()
            except Exception as exc:
                raise UnavailableError(f"GNS3 server {self.url} cannot create {role} {name} from template "
                                       f"{template['name']!r}: {_reason(exc)} (map {role} to a template this server can "
                                       f"create: gns3_template: {{{role}: NAME}})") from None
            self.nodes[name] = self._ensure_ports(node, degree.get(name, 0), template["name"])
        free = {name: [(p["adapter_number"], p["port_number"]) for p in node["ports"]] for name, node in self.nodes.items()}
        pairs = [(link.name, link.a, link.b) for link in topology.links.values()]
        if "controller" in roles:
            pairs.append(("controller-" + topology.switches[0], "controller", topology.switches[0]))
        for lname, a, b in pairs:
            ends = []
            for end in (a, b):
                adapter, port = free[end].pop(0)
                ends.append({"node_id": self.nodes[end]["node_id"], "adapter_number": adapter, "port_number": port})
            link = Link(project_id=self.project.project_id, connector=self.connector, nodes=ends)
            _gns3(link.create, f"{self.url}: linking {a} and {b}")
            self.link_ids[lname] = link.link_id

    def _ensure_ports(self, node, needed: int, template: str) -> dict:
        """The node's data, with at least `needed` ports (more adapters where its type allows)."""
        ports = node.ports or []
        if len(ports) < needed:
            if node.node_type in _ADAPTER_TYPES:
                _gns3(lambda: node.update(properties={"adapters": needed}), f"{self.url}: adding adapters to {node.name}")
            elif node.node_type in ("ethernet_switch", "ethernet_hub"):
                mapping = list(node.properties.get("ports_mapping") or [])
                for k in range(len(mapping), needed):
                    entry = {"name": f"Ethernet{k}", "port_number": k}
                    if node.node_type == "ethernet_switch":
                        entry.update(type="access", vlan=1, ethertype="0x8100")
                    mapping.append(entry)
                _gns3(lambda: node.update(properties={"ports_mapping": mapping}), f"{self.url}: adding ports to {node.name}")
            node.get()
            ports = node.ports or []
            if len(ports) < needed:
                raise FlopynetError(f"GNS3 template {template!r} gives node {node.name} {len(ports)} port(s); "
                                    f"the topology links it {needed} times")
        return {"node_id": node.node_id, "name": node.name, "node_type": node.node_type, "ports": ports}

    def _import(self, topology: Topology) -> None:
        """Import the .gns3 project file as this run's project; map its nodes and links by name."""
        from gns3fy import Project
        self.project_name = self._project_name(topology)
        data = io.BytesIO()
        with zipfile.ZipFile(data, "w") as z:
            z.writestr("project.gns3", topology.source.read_bytes())
        project_id = str(uuid.uuid4())
        try:
            response = self.connector.session.post(f"{self.connector.base_url}/projects/{project_id}/import",
                                                   params={"name": self.project_name}, data=data.getvalue(),
                                                   timeout=TIMEOUT)
        except Exception as exc:
            raise FlopynetError(f"GNS3 server {self.url}: importing {topology.source}: {_reason(exc)}") from None
        if response.status_code >= 300:
            raise FlopynetError(f"GNS3 server {self.url}: importing {topology.source}: {_response_reason(response)}")
        self.project = Project(project_id=project_id, name=self.project_name, connector=self.connector)
        self._call("post", f"/projects/{project_id}/open", "opening the imported project")
        nodes = self._call("get", f"/projects/{project_id}/nodes", "listing the imported nodes")
        self.nodes = {n["name"]: n for n in nodes}
        by_id = {n["node_id"]: n["name"] for n in nodes}
        links = self._call("get", f"/projects/{project_id}/links", "listing the imported links")
        for link in links:
            a, b = (by_id[end["node_id"]] for end in link["nodes"])
            if topology.graph.has_edge(a, b):
                self.link_ids.setdefault(topology.link(a, b).name, link["link_id"])
        missing = sorted(set(topology.links) - set(self.link_ids))
        if missing:
            raise FlopynetError(f"{topology.source}: the imported project lacks links {', '.join(missing)}")

    def _sync(self, states: dict[str, LinkFilterState]) -> None:
        """Put on the server every link whose filters or suspension differ from what it has."""
        pid = self.project.project_id
        for name, state in states.items():
            if self.applied.get(name) == state:
                continue
            if state.filters and not self._filterable(name):
                raise UnavailableError(f"GNS3 link {name} cannot filter: neither end runs filters "
                                       f"(GNS3 filters run in VPCS, Qemu, Docker, IOU, VirtualBox, VMware, Dynamips "
                                       f"and Cloud nodes, not in built-in switches and hubs)")
            self._call("put", f"/projects/{pid}/links/{self.link_ids[name]}", f"setting link {name}",
                       json_data={"filters": state.filters, "suspend": state.suspend})
            self.applied[name] = state

    def _filterable(self, name: str) -> bool:
        if name not in self._filter_cache:
            found = self._call("get", f"/projects/{self.project.project_id}/links/{self.link_ids[name]}/available_filters",
                               f"filters of link {name}")
            self._filter_cache[name] = bool(found)
        return self._filter_cache[name]

    def apply(self, condition: Condition) -> int:
        check_names(self.topology, condition)
        hosts_down = condition.hosts_down
        if condition.bandwidth_mbps is not None:
            raise UnavailableError(self._no_bandwidth())
        if condition.background:
            raise UnavailableError(self._no_background())
        handle, self._next_handle = self._next_handle, self._next_handle + 1
        self._conditions[handle] = condition
        try:
            self._sync(compose(self.topology, self._conditions.values()))
        except BaseException:
            del self._conditions[handle]
            raise
        if hosts_down and self._started:
            for host in hosts_down:
                self._call("post", f"/projects/{self.project.project_id}/nodes/{self.nodes[host]['node_id']}/stop",
                           f"stopping {host}")
            self._stopped_hosts[handle] = hosts_down
        return handle

    def revert(self, handle: int) -> None:
        del self._conditions[handle]
        self._sync(compose(self.topology, self._conditions.values()))
        for host in self._stopped_hosts.pop(handle, ()):
            self._call("post", f"/projects/{self.project.project_id}/nodes/{self.nodes[host]['node_id']}/start",
                       f"starting {host}")

    def reachable(self, src: str) -> set[str]:
        up = nx.Graph()
        up.add_nodes_from(self.topology.graph)
        up.add_edges_from((link.a, link.b) for name, link in self.topology.links.items()
                          if not self.applied.get(name, LinkFilterState({}, False)).suspend)
        return nx.node_connected_component(up, src)

    def stats(self) -> NetworkStats:
        """The links as the backend set them (GNS3 reports no utilisation: 0 here)."""
        per_link = {}
        for name, link in self.topology.links.items():
            state = self.applied.get(name, LinkFilterState({}, False))
            per_link[name] = {"latency_ms": float(state.filters.get("delay", [0])[0]), "bandwidth_mbps": link.bw_mbps,
                              "loss": state.filters.get("packet_loss", [0])[0] / 100.0, "up": not state.suspend,
                              "utilization": 0.0}
        return NetworkStats.of(per_link)

    def start(self) -> None:
        """Start every node of the project; a server that cannot is an UnavailableError with its reason."""
        if self._started:
            return
        try:
            self.connector.http_call("post", f"{self.connector.base_url}/projects/{self.project.project_id}/nodes/start")
        except Exception as exc:
            raise UnavailableError(f"GNS3 server {self.url} could not start the nodes of {self.project_name}: "
                                   f"{_reason(exc)}") from None
        self._started = True

    def transfer(self, flows: list[Flow], deadline: float = math.inf) -> list[float | None]:
        """FL traffic needs the nodes running the FL node program; flows are never simulated here."""
        self.start()
        raise UnavailableError(self._no_traffic())

    def read_links(self) -> dict[str, dict]:
        """Each topology link as the server has it now: {'filters': ..., 'suspend': ...}."""
        links = self._call("get", f"/projects/{self.project.project_id}/links", "listing links")
        by_id = {link["link_id"]: link for link in links}
        return {name: {"filters": by_id[lid]["filters"], "suspend": by_id[lid]["suspend"]}
                for name, lid in self.link_ids.items()}

    def teardown(self) -> None:
        """Stop the nodes and delete the project (unless gns3_keep); safe to call twice."""
        if self.project is None or self.project.project_id is None:
            return
        base, pid = self.connector.base_url, self.project.project_id
        if self._started:
            try:
                self.connector.http_call("post", f"{base}/projects/{pid}/nodes/stop")
            except Exception as exc:
                warnings.warn(f"GNS3 server {self.url}: stopping the nodes of {self.project_name}: {_reason(exc)}")
            self._started = False
        if self.keep:
            warnings.warn(f"GNS3 project {self.project_name} ({pid}) kept on {self.url} (gns3_keep)")
        else:
            try:
                self.connector.http_call("delete", f"{base}/projects/{pid}")
            except Exception as exc:
                warnings.warn(f"GNS3 server {self.url}: deleting project {self.project_name}: {_reason(exc)}")
        self.project = None


def _reason(exc: BaseException) -> str:
    """A server error as gns3fy reports it ('409: Could not find Dynamips'), or the exception."""
    return str(exc) if exc.__class__.__name__ == "HTTPError" else f"{type(exc).__name__}: {exc}"


def _response_reason(response) -> str:
    try:
        body = response.json()
        return f"{response.status_code}: {body.get('message', body)}"
    except ValueError:
        return f"{response.status_code}: {response.text[:300]}"


def _gns3(fn, what: str):
    try:
        return fn()
    except Exception as exc:
        raise FlopynetError(f"GNS3 server {what}: {_reason(exc)}") from None


def _check_pydantic() -> None:
    """gns3fy 0.8.0 sends pydantic 1.10's '__pydantic_initialised__' to the server as a field."""
    try:
        from importlib.metadata import version
        v = version("pydantic")
    except Exception:
        return
    if v.startswith("1.10"):
        raise UnavailableError(f"gns3fy 0.8.0 does not work with pydantic {v} (it sends '__pydantic_initialised__' "
                               "to the server): install pytest-flopynet[gns3], which takes pydantic 1.9")


# -- a local gns3-server for tests and trials --------------------------------------------------
def venv_dir() -> Path:
    """$FLOPYNET_GNS3_VENV, else ~/.cache/pytest-flopynet/gns3-server-<version>."""
    return Path(os.environ.get("FLOPYNET_GNS3_VENV")
                or Path.home() / ".cache" / "pytest-flopynet" / f"gns3-server-{SERVER_VERSION}")


def server_binary() -> Path:
    binary = venv_dir() / "bin" / "gns3server"
    if not binary.exists():
        raise UnavailableError(f"gns3-server's environment is missing ({venv_dir()}): create it with "
                               "`python -m pytest_flopynet.network.gns3 --setup-server`")
    return binary


def setup_server() -> Path:
    """Install gns3-server (PyPI) into a virtual environment of its own (its aiohttp, jsonschema and
    psutil pins are its own business)."""
    folder = venv_dir()
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "install", "-q", f"gns3-server=={SERVER_VERSION}"],
                   check=True)
    return folder


class LocalGNS3Server:
    """gns3-server on 127.0.0.1 at a free port, with no authentication and every path (projects,
    images, configs, its HOME) under a temporary directory; `stop()` ends it and removes them."""

    def __init__(self, port: int | None = None, auth: tuple[str, str] | None = None):
        self.port = port or free_port()
        self.auth = auth  # (user, password) to require HTTP basic auth
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.home: Path | None = None

    def start(self, timeout: float = 60.0) -> LocalGNS3Server:
        binary = server_binary()
        self.home = Path(tempfile.mkdtemp(prefix="flopynet-gns3-"))
        config = self.home / "gns3_server.conf"
        paths = {key: self.home / key for key in ("projects", "images", "configs", "appliances", "symbols")}
        lines = ["[Server]", "host = 127.0.0.1", f"port = {self.port}", "report_errors = False"]
        lines += [f"auth = True\nuser = {self.auth[0]}\npassword = {self.auth[1]}"] if self.auth else ["auth = False"]
        lines += [f"{key}_path = {path}" for key, path in paths.items()]
        config.write_text("\n".join(lines) + "\n")
        env = {**os.environ, "HOME": str(self.home)}
        self.process = subprocess.Popen([str(binary), "--config", str(config), "--local", "--quiet",
                                         "--log", str(self.home / "server.log")],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                rc, err = self.process.returncode, self.process.stderr.read()[-2000:]
                self.stop()
                raise RuntimeError(f"gns3-server exited ({rc}): {err}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/version", timeout=1) as response:
                    json.load(response)
                    return self
            except urllib.error.HTTPError:  # it answers, asking for credentials
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gns3-server did not answer {self.url}/v2/version within {timeout:g} s")

    def stop(self) -> None:
        stop_group(self.process, timeout=10)
        self.process = None
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None

    def __enter__(self) -> LocalGNS3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    if sys.argv[1:] == ["--setup-server"]:
        print(f"gns3-server environment: {setup_server()}")
    else:
        print("usage: python -m pytest_flopynet.network.gns3 --setup-server", file=sys.stderr)
        sys.exit(2)
