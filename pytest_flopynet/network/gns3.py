"""The GNS3 backend: a scenario's topology as a GNS3 project, driven through gns3fy (GNS3 REST API v2),
with FL running inside its Docker nodes.

`GNS3Network.create` connects to the server, makes a project named per worker and scenario, creates a
node per host and switch from the templates mapped to its role, links them as the topology says, and
sets each link's own delay and loss as GNS3 link filters. `build` (what a run calls) also gives each FL
node its address (its /etc/network/interfaces, through the server's file API, as a GNS3 user would),
starts the nodes and waits until every host reaches the server. The nodes executor then runs the FL
node program inside the containers (network/docker_nodes.py), so real weights cross the GNS3 links.

Conditions: delay [latency, jitter], `packet_loss`, `corrupt`, `frequency_drop` and `bpf` are link
filters; failures and partitions suspend links; a failed host is a stopped node; a bandwidth limit is
tc inside the network namespace of the link's Docker end (GNS3 has no rate filter). They compose as
in the simulation (delays add, loss rates compound, down wins); reverting one sets every link it
touched back to what the remaining conditions ask for. GNS3 filters take whole milliseconds and whole
percents, so values are rounded (with a warning when that changes one). Time: a WallClock; with
time_scale s, delays are 1/s and bandwidths s times the scenario's, as on netns.

Switches are layer-2 (Dynamips' Ethernet switch by default) and have no spanning tree, so where the
switches' links form cycles the backend keeps the links outside a spanning tree suspended, and brings
one back when a link of the tree fails (what STP would do): hosts reach each other exactly when the
topology without its failed links connects them.

Templates per role (`DEFAULT_TEMPLATES`, overridden by the scenario's `network_config.gns3_template`,
then by the `gns3_templates` option): `server`, `client`, `host` (idle hosts; default: the client's),
`switch` and `controller` (an SDN controller node linked to the first switch; none by default). The
default for FL nodes, "flopynet-node", is a Docker template of this package's FL node image
(network/node_image.py, `flopynet gns3 image`), created on the server when missing. A
`gns3_template` that is a plain string names the template of the FL nodes (server, clients, hosts).
The server's URL: the `gns3_url` option, else `gns3_template: {url: ...}`, else http://127.0.0.1:3080.
Credentials come from FLOPYNET_GNS3_USER and FLOPYNET_GNS3_PASSWORD only; they are never logged,
written, or shown in a message.

What GNS3 cannot do is a skip with the reason (UnavailableError), never a substitute: background
floods, a bandwidth limit on a link with no Docker end, FL on nodes that are not Docker nodes of the
FL image.

A local gns3-server for the tests lives in a virtual environment of its own
(`python -m pytest_flopynet.network.gns3 --setup-server`; `LocalGNS3Server` runs it). Every project
is recorded (state folder, gns3/), so `flopynet cleanup` deletes those of runs that died.
"""
from __future__ import annotations

import base64
import fcntl
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from ..credentials import split_credentials
from ..errors import FlopynetError, UnavailableError
from ..processes import free_port, stop_group
from . import docker_nodes, node_image
from .backend import Condition, Flow, NetworkStats, check_names, link_states
from .lab import STATE_DIR, _alive, _same, identity, state_dir
from .topology import Topology

DEFAULT_URL = "http://127.0.0.1:3080"
ROLES = ("server", "client", "host", "switch", "controller")
# VPCS ships with every GNS3 and is created without any image; "Ethernet switch" is GNS3's built-in
# layer-2 switch (it runs in Dynamips, present on every GNS3 VM). A server without Dynamips refuses
# it, and the build then skips with the server's reason: map `switch` to a template it can create
# (an Open vSwitch appliance, Docker or Qemu).
NODE_TEMPLATE = "flopynet-node"  # this package's FL node image as a Docker template (made when missing)
NODE_FOLDER = "/flopynet"  # a GNS3 volume of each FL node: its configuration and state outlive a restart
NODE_START = "sleep infinity"  # the container stays up; the node program runs in it (docker_nodes.enter)
DEFAULT_TEMPLATES = {"server": NODE_TEMPLATE, "client": NODE_TEMPLATE, "host": None, "switch": NODE_TEMPLATE,
                     "controller": None}
SETTINGS_KEYS = (*ROLES, "url", "compute_id")
IMAGE_ENV = "FLOPYNET_NODE_IMAGE"  # the FL nodes' Docker image, in place of `flopynet gns3 image`'s
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


def compose(topology: Topology, conditions, scale: float = 1.0, own_delay: bool = True) -> dict[str, LinkFilterState]:
    """Each link's GNS3 state under its own delay and loss and the given conditions: delays and
    jitters add (then divided by the time scale), loss and corruption rates compound, the most frequent
    drop wins (-1: all), BPF expressions accumulate, down wins."""
    states = {}
    for name, link in topology.links.items():
        delay = link.delay_ms if own_delay else 0.0
        jitter, keep, intact, every, bpf, down = 0.0, 1.0 - link.loss, 1.0, 0, [], False
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
        latency = _whole(delay / scale, "delay", name, "ms")
        if latency > 0:  # GNS3 drops a delay filter whose latency is 0
            filters["delay"] = [latency, _whole(jitter / scale, "jitter", name, "ms")]
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
        self.scale = float(getattr(clock, "time_scale", 1.0))
        # uBridge's delay filter holds each frame for the delay in the link's one forwarding thread, so a
        # link with delay d passes one frame per d (10 ms: about 150 kB/s): a constant latency on every link
        # would be a slow link, not a far one. The links' own latency is kept only with gns3_link_delay.
        self.own_delay = truthy(self.options.get("gns3_link_delay", False))
        self.ends: dict[str, dict[str, int]] = {}  # topology link name -> {node: adapter number}
        self.addresses: dict[str, str] = {}  # FL host -> its IPv4 address
        self.reserve: set[str] = set()  # switch links suspended to keep the switches loop-free
        self.down: set[str] = set()  # links the conditions take down
        self.shaped: dict[str, float] = {}  # link -> the rate (Mbit/s, scaled) set by tc
        self.processes: list[subprocess.Popen] = []  # node programs started in the containers
        self._pids: dict[str, int] = {}  # host -> its container's first process, while it runs
        self._record_file: Path | None = None

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
            response = self.connector.http_call(method, f"{self.connector.base_url}{path}", **kwargs)
            return response.json() if response.content else None  # file writes answer 201 with no body
        except Exception as exc:
            raise FlopynetError(f"GNS3 server {self.url}: {what}: {_reason(exc)}") from None

    def server_templates(self) -> dict[str, dict]:
        return {t["name"]: t for t in self._call("get", "/templates", "listing templates")}

    def _resolve_templates(self, needed: set[str]) -> dict[str, dict]:
        """Template name -> the server's template, for the roles the topology needs; a name the server
        lacks is an error that lists the templates it has ("flopynet-node" is made when missing)."""
        available = self.server_templates()
        names = {self.templates[role] for role in needed}
        if None in names:
            missing = sorted(role for role in needed if self.templates[role] is None)
            raise FlopynetError(f"no GNS3 template mapped for {', '.join(missing)} (gns3_template: {{role: name}})")
        unknown = sorted(n for n in names if n not in available and n != NODE_TEMPLATE)
        if unknown:
            roles = sorted(role for role in needed if self.templates[role] in unknown)
            raise FlopynetError(f"GNS3 server {self.url} has no template {', '.join(map(repr, unknown))} "
                                f"(mapped for {', '.join(roles)}); its templates: {', '.join(sorted({t['name'] for t in available.values()}))}")
        if NODE_TEMPLATE in names:
            available[NODE_TEMPLATE] = self._node_template(available)
        return {n: available[n] for n in names}

    def _node_template(self, available: dict[str, dict]) -> dict:
        """The server's Docker template of the FL node image this package builds (named after the image's
        content, so a rebuilt image gets its own); made when missing. A local server needs the image here."""
        tag = os.environ.get(IMAGE_ENV) or node_image.image_tag()  # an image of one's own, else this package's
        ours = tag.startswith(node_image.REPOSITORY + ":")
        name = f"{NODE_TEMPLATE}-{tag.split(':', 1)[1] if ours else re.sub(r'[^A-Za-z0-9_.-]+', '-', tag)}"
        if name in available:
            return available[name]
        if self._local():
            reason = docker_nodes.unavailable() or node_image.docker_unavailable()
            if reason:
                raise UnavailableError(reason)
            if not node_image.image_exists(tag):
                raise UnavailableError(f"the FL node image {tag} is not built on this host: run `flopynet gns3 image` "
                                       "(`flopynet gns3 check` lists what a GNS3 host needs)")
        return self._call("post", "/templates", f"creating the Docker template {name}", json_data={
            "name": name, "template_type": "docker", "image": tag, "adapters": 1, "start_command": NODE_START,
            "console_type": "none", "compute_id": self.compute_id, "extra_volumes": [NODE_FOLDER], "category": "guest",
            "symbol": ":/symbols/docker_guest.svg"})

    def _local(self) -> bool:
        host = re.sub(r"^\w+://", "", self.url).split("/")[0].rsplit(":", 1)[0].strip("[]")
        return host in ("127.0.0.1", "localhost", "::1")

    # -- Backend protocol ---------------------------------------------------------------------
    def unsupported(self, features: frozenset[str]) -> str | None:
        """Why conditions with these features cannot run on GNS3 (a skip reason), or None."""
        if "background" in features:
            return self._no_background()
        return None

    @staticmethod
    def _no_background() -> str:
        return "the gns3 backend cannot run background floods: they need traffic generators inside running nodes"

    def build(self, topology: Topology) -> None:
        """Make the project (`create`), give the FL nodes their addresses, start every node, cap the links
        at their bandwidth, and wait until every host reaches the server: ready for FL traffic. What the
        server cannot do is an UnavailableError with its reason, and the project is deleted again."""
        self.create(topology)
        try:
            t0 = time.perf_counter()
            self._address()
            self.start()
            self._bridge_switches()
            self._wait_for_routes()
            self._reconcile_rates()
            self.timings["start_s"] = time.perf_counter() - t0
        except BaseException:
            self.teardown()
            raise

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
            self._record()
            self._sync(self._states())
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
                self.ends.setdefault(lname, {})[end] = adapter
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
            if topology.graph.has_edge(a, b) and topology.link(a, b).name not in self.link_ids:
                self.link_ids[topology.link(a, b).name] = link["link_id"]
                self.ends[topology.link(a, b).name] = {by_id[end["node_id"]]: end["adapter_number"] for end in link["nodes"]}
        missing = sorted(set(topology.links) - set(self.link_ids))
        if missing:
            raise FlopynetError(f"{topology.source}: the imported project lacks links {', '.join(missing)}")

    def _states(self) -> dict[str, LinkFilterState]:
        """What every link should be now: the conditions composed, and the switch links outside a spanning
        tree of the links that are up suspended (layer-2 switches without STP must not form a loop). The
        tree keeps the links it had where it can, so a failure moves as little traffic as possible."""
        states = compose(self.topology, self._conditions.values(), self.scale, own_delay=self.own_delay)
        self.down = {name for name, state in states.items() if state.suspend}
        switches = set(self.topology.switches)
        trunks = nx.Graph()
        for name, link in self.topology.links.items():
            if link.a in switches and link.b in switches and name not in self.down:
                trunks.add_edge(link.a, link.b, name=name, weight=1 if name in self.reserve else 0)
        tree = {d["name"] for _, _, d in nx.minimum_spanning_edges(trunks, data=True)}
        self.reserve = {d["name"] for _, _, d in trunks.edges(data=True)} - tree
        return {name: LinkFilterState(state.filters, True) if name in self.reserve else state
                for name, state in states.items()}

    def _sync(self, states: dict[str, LinkFilterState]) -> None:
        """Put on the server every link whose filters or suspension differ from what it has; links that
        lose their suspension go last, so a replacement path never closes a loop while the old is up."""
        pid = self.project.project_id
        for name, state in sorted(states.items(), key=lambda kv: not kv[1].suspend):
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
        if condition.background:
            raise UnavailableError(self._no_background())
        if condition.bandwidth_mbps is not None:
            for name in condition.links:
                if self._docker_end(name) is None:
                    raise UnavailableError(f"the gns3 backend cannot limit the bandwidth of link {name}: neither end is "
                                           "a Docker node, whose network namespace tc can shape (GNS3 filters have no rate)")
        handle, self._next_handle = self._next_handle, self._next_handle + 1
        self._conditions[handle] = condition
        try:
            if condition.hosts_down and self._started:
                for host in condition.hosts_down:
                    self._node_call(host, "stop")
                self._stopped_hosts[handle] = condition.hosts_down
            self._sync(self._states())
            self._reconcile_rates()
        except BaseException:
            del self._conditions[handle]
            raise
        return handle

    def revert(self, handle: int) -> None:
        del self._conditions[handle]
        self._sync(self._states())
        still = self._hosts_down()
        for host in self._stopped_hosts.pop(handle, ()):
            if host not in still:
                self._node_call(host, "start")
        self._reconcile_rates()

    def _hosts_down(self) -> set[str]:
        """The hosts some condition in force stops."""
        return {h for c in self._conditions.values() for h in c.hosts_down}

    def _node_call(self, host: str, action: str) -> None:
        """Stop or start one node; a started Docker node gets its rates back (its namespace is new)."""
        with starting_nodes():
            self._call("post", f"/projects/{self.project.project_id}/nodes/{self.nodes[host]['node_id']}/{action}",
                       f"{'stopping' if action == 'stop' else 'starting'} {host}")
        self._pids.pop(host, None)
        self.shaped = {name: rate for name, rate in self.shaped.items() if host not in self.ends.get(name, {})}

    def reachable(self, src: str) -> set[str]:
        """Hosts src reaches: the topology without its failed links (suspended reserves come back when needed)
        and without stopped hosts."""
        stopped = self._hosts_down()
        up = nx.Graph()
        up.add_nodes_from(n for n in self.topology.graph if n not in stopped or n == src)
        up.add_edges_from((link.a, link.b) for name, link in self.topology.links.items()
                          if name not in self.down and link.a in up and link.b in up)
        return nx.node_connected_component(up, src)

    def stats(self) -> NetworkStats:
        """The links as the backend set them (GNS3 reports no utilisation: 0 here); latency in scenario ms."""
        per_link = {}
        rates = link_states(self.topology, self._conditions.values())
        for name, link in self.topology.links.items():
            state = self.applied.get(name, LinkFilterState({}, False))
            per_link[name] = {"latency_ms": float(state.filters.get("delay", [0])[0]) * self.scale,
                              "bandwidth_mbps": rates[name].bw_mbps,
                              "loss": state.filters.get("packet_loss", [0])[0] / 100.0, "up": name not in self.down,
                              "utilization": 0.0}
        return NetworkStats.of(per_link)

    def start(self) -> None:
        """Start every node of the project; a server that cannot is an UnavailableError with its reason."""
        if self._started:
            return
        try:
            with starting_nodes():
                self.connector.http_call("post", f"{self.connector.base_url}/projects/{self.project.project_id}/nodes/start")
        except Exception as exc:
            raise UnavailableError(f"GNS3 server {self.url} could not start the nodes of {self.project_name}: "
                                   f"{_reason(exc)}") from None
        self._started = True

    # -- FL nodes: addresses, rates, processes ------------------------------------------------------
    def _fl_hosts(self) -> list[str]:
        return sorted(self.topology.hosts)

    def _address(self) -> None:
        """Each host's first interface gets 10.0.0.0/16 addresses in topology order, written as its
        /etc/network/interfaces (GNS3's Docker nodes bring it up with ifup at start)."""
        for k, host in enumerate(self._fl_hosts()):
            if self.nodes[host].get("node_type") != "docker":
                continue
            self.addresses[host] = ip = f"10.0.{k // 250}.{k % 250 + 1}"
            config = f"auto eth0\niface eth0 inet static\n\taddress {ip}\n\tnetmask 255.255.0.0\n"
            self._call("post", f"/projects/{self.project.project_id}/nodes/{self.nodes[host]['node_id']}/files/"
                               "etc/network/interfaces", f"writing the address of {host}", data=config)

    def _bridge_switches(self, timeout: float = 30.0) -> None:
        """A switch that is a Docker node bridges all its interfaces (Linux's bridge, as GNS3's Open vSwitch
        appliance would with OVS): links on both sides of it can then filter and be shaped."""
        for switch in self.topology.switches:
            if self.nodes[switch].get("node_type") != "docker":
                continue
            pid = self._pid(switch)
            devices = [f"eth{a}" for ends in self.ends.values() for node, a in ends.items() if node == switch]
            deadline = time.monotonic() + timeout
            while any(docker_nodes.net(pid, "ip", "link", "show", d, check=False).returncode for d in devices):
                if time.monotonic() > deadline:
                    raise FlopynetError(f"GNS3 switch {switch}: its interfaces {', '.join(devices)} did not appear")
                time.sleep(0.2)
            docker_nodes.net(pid, "ip", "link", "add", "br0", "type", "bridge")
            for d in devices:
                docker_nodes.net(pid, "ip", "link", "set", d, "master", "br0")
                docker_nodes.net(pid, "ip", "link", "set", d, "up")
            docker_nodes.net(pid, "ip", "link", "set", "br0", "up")

    def _container(self, host: str) -> str:
        """The Docker container of the host's node, as the server has it now."""
        node = self._call("get", f"/projects/{self.project.project_id}/nodes/{self.nodes[host]['node_id']}",
                          f"reading node {host}")
        container = (node.get("properties") or {}).get("container_id")
        if node.get("node_type") != "docker" or not container:
            raise UnavailableError(f"GNS3 node {host} is a {node.get('node_type')} node: FL runs in Docker nodes of "
                                   "the FL node image (map server and client to such a template, or leave the default)")
        return container

    def _pid(self, host: str) -> int:
        """The host PID of the host's container (looked up again after the node restarts)."""
        if host not in self._pids:
            self._pids[host] = docker_nodes.container_pid(self._container(host))
        return self._pids[host]

    def _docker_end(self, link: str) -> tuple[str, int] | None:
        """The end of the link whose network namespace tc can shape (a Docker node; a host's before a
        switch's), and its adapter."""
        ends = sorted(self.ends.get(link, {}).items(), key=lambda e: (e[0] not in self.topology.hosts, e[0]))
        for node, adapter in ends:
            if self.nodes.get(node, {}).get("node_type") == "docker":
                return node, adapter
        return None

    def _reconcile_rates(self) -> None:
        """Every link with a Docker end at its bandwidth now (scaled), set where it changed."""
        if not self._started:
            return
        stopped = self._hosts_down()
        for name, state in link_states(self.topology, self._conditions.values()).items():
            end = self._docker_end(name)
            rate = state.bw_mbps * self.scale
            if end is None or end[0] in stopped or self.shaped.get(name) == rate:
                continue
            docker_nodes.shape(self._pid(end[0]), f"eth{end[1]}", rate)
            self.shaped[name] = rate

    def _wait_for_routes(self, timeout: float = 60.0) -> None:
        """Every host answers the server's ping (its interface is up and the switches learnt the way)."""
        server = self.topology.server
        waiting = [h for h in self._fl_hosts() if h != server and h in self.addresses]
        if server not in self.addresses:
            return
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            waiting = [h for h in waiting if docker_nodes.net(
                self._pid(h), "ping", "-n", "-c", "1", "-W", "1", self.addresses[server], check=False).returncode != 0]
        if waiting:
            raise FlopynetError(f"GNS3 project {self.project_name}: no route from {', '.join(waiting)} to {server} "
                                f"after {timeout:g} s")

    carries_node_traffic = True  # the node programs' TCP crosses the GNS3 links: it is the round's traffic

    def address(self, host: str) -> str:
        return self.addresses[host]

    def node_argv(self, host: str, config: Path, state: str, args: list[str]) -> list[str]:
        """The node program as the container runs it: its configuration copied into the node's volume,
        its state file in that volume, so that it survives a restart. The run's data folder
        (--flopynet-data-dir) goes into the volume too, hard-linked where it can be: the containers run on
        this host (the plugin enters their namespaces), so their volumes are folders here."""
        data = json.loads(Path(config).read_text())
        if data.get("data_dir"):
            volume = docker_nodes.volume_source(self._container(host), NODE_FOLDER)
            docker_nodes.carry(Path(data["data_dir"]).expanduser(), volume / "data")
            data["data_dir"] = f"{NODE_FOLDER}/data"
        self._call("post", f"/projects/{self.project.project_id}/nodes/{self.nodes[host]['node_id']}/files/"
                           f"{NODE_FOLDER.strip('/')}/node.json", f"writing the node configuration of {host}",
                   data=json.dumps(data))
        return [node_image.PYTHON, "-m", "pytest_flopynet.fl.node", "--config", f"{NODE_FOLDER}/node.json", *args,
                "--state", f"{NODE_FOLDER}/{state}"]

    def spawn(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """argv inside the host's container (its own process group here: a kill reaches it); stopping
        the node ends it too."""
        proc = subprocess.Popen(docker_nodes.enter(self._pid(host), argv), start_new_session=True, **kwargs)
        self.processes = [p for p in self.processes if p.poll() is None] + [proc]
        return proc

    def limit_cpu(self, host: str, factor: float):
        """resource_constraint: the host's container gets 1/factor of a CPU (docker update --cpus) until undone."""
        container = self._container(host)
        docker_nodes.set_cpus(container, 1.0 / factor)
        return lambda: docker_nodes.set_cpus(container, 0)

    def transfer(self, flows: list[Flow], deadline: float = math.inf) -> list[float | None]:
        """Flows are never simulated here: FL traffic is the node programs' own (the nodes executor)."""
        raise UnavailableError("the gns3 backend moves FL traffic only as the node programs inside its Docker nodes "
                               "(the nodes executor)")

    def read_links(self) -> dict[str, dict]:
        """Each topology link as the server has it now: {'filters': ..., 'suspend': ...}."""
        links = self._call("get", f"/projects/{self.project.project_id}/links", "listing links")
        by_id = {link["link_id"]: link for link in links}
        return {name: {"filters": by_id[lid]["filters"], "suspend": by_id[lid]["suspend"]}
                for name, lid in self.link_ids.items()}

    # -- records and teardown ------------------------------------------------------------------
    def _record(self) -> None:
        """This run's project, for `flopynet cleanup` after a crash (the owner's PID and start time)."""
        folder = records_dir()
        self._record_file = folder / f"{self.project.project_id}.json"
        self._record_file.write_text(json.dumps({
            "owner": os.getpid(), "owner_identity": identity(os.getpid()), "url": self.url,
            "project_id": self.project.project_id, "project_name": self.project_name}))

    def teardown(self) -> None:
        """End the node programs, stop the nodes and delete the project (unless gns3_keep); safe to call twice."""
        for proc in self.processes:
            stop_group(proc, timeout=2)
        self.processes = []
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
        if self._record_file is not None:
            self._record_file.unlink(missing_ok=True)
        self.project = None


@contextmanager
def starting_nodes():
    """One node start at a time from this host: GNS3 names a Docker node's host-side interface after the
    first free tap-gns3-eN it sees, so two servers on one host (xdist workers' local servers) starting
    nodes at once can pick the same name ("unable to open TAP device: Device or resource busy")."""
    with open(Path(tempfile.gettempdir()) / "flopynet-gns3-start.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def records_dir() -> Path:
    """The GNS3 projects of running (or crashed) runs, beside the netns labs' records."""
    folder = state_dir() / "gns3"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def leftovers() -> list[str]:
    """Records of GNS3 projects whose run is gone (their projects may still be on the server)."""
    folder = STATE_DIR / "gns3"
    return [f"GNS3 project record {p}" for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def cleanup() -> list[str]:
    """Delete the projects of dead runs from their servers (GNS3 removes their containers with them), then
    their records. Projects of live runs are left alone."""
    removed = []
    for path in sorted(records_dir().glob("*.json")):
        try:
            state = json.loads(path.read_text())
            owner, url, project_id = int(state["owner"]), str(state["url"]), str(state["project_id"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(owner) and (state.get("owner_identity") is None or _same(owner, state["owner_identity"])):
            continue
        if not re.fullmatch(r"[0-9a-f-]{36}", project_id):
            warnings.warn(f"ignoring GNS3 record {path}: {project_id[:60]!r} is not a project id")
            continue
        user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
        request = urllib.request.Request(f"{url}/v2/projects/{project_id}", method="DELETE")
        if user:
            request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        try:
            urllib.request.urlopen(request, timeout=30).close()
            removed.append(f"GNS3 project {state.get('project_name', project_id)} on {url}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                warnings.warn(f"GNS3 server {url}: deleting project {project_id}: {exc.code}")
                continue
        except OSError:
            pass  # the server is gone, and its projects with it (or it is elsewhere now): forget the record
        path.unlink(missing_ok=True)
    return removed


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


PORT_SLOTS = 40  # local servers at once: each gets its own console and UDP tunnel port ranges


class LocalGNS3Server:
    """gns3-server on 127.0.0.1 at a free port, with no authentication and every path (projects,
    images, configs, its HOME) under a temporary directory; `stop()` ends it and removes them.

    Two servers on one host (xdist workers) would both hand out consoles from port 5000 and uBridge UDP
    tunnels from 10000, so one node's link would carry another server's packets: each server holds a
    slot (a lock file) and takes its ranges from it."""

    def __init__(self, port: int | None = None, auth: tuple[str, str] | None = None):
        self.port = port or free_port()
        self.auth = auth  # (user, password) to require HTTP basic auth
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.home: Path | None = None
        self._slot_file = None

    def _take_slot(self) -> int:
        folder = Path(tempfile.gettempdir()) / "flopynet-gns3-slots"
        folder.mkdir(exist_ok=True)
        for slot in range(PORT_SLOTS):
            handle = open(folder / f"{slot}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            self._slot_file = handle  # held until stop(): the lock ends with this process too
            return slot
        raise RuntimeError(f"{PORT_SLOTS} local gns3-servers run already (slots in {folder})")

    def start(self, timeout: float = 60.0) -> LocalGNS3Server:
        binary = server_binary()
        slot = self._take_slot()
        self.home = Path(tempfile.mkdtemp(prefix="flopynet-gns3-"))
        config = self.home / "gns3_server.conf"
        paths = {key: self.home / key for key in ("projects", "images", "configs", "appliances", "symbols")}
        lines = ["[Server]", "host = 127.0.0.1", f"port = {self.port}", "report_errors = False"]
        lines += [f"auth = True\nuser = {self.auth[0]}\npassword = {self.auth[1]}"] if self.auth else ["auth = False"]
        lines += [f"{key}_path = {path}" for key, path in paths.items()]
        lines += [f"console_start_port_range = {20000 + slot * 500}", f"console_end_port_range = {20000 + slot * 500 + 499}",
                  f"udp_start_port_range = {40000 + slot * 600}", f"udp_end_port_range = {40000 + slot * 600 + 599}"]
        config.write_text("\n".join(lines) + "\n")
        env = {**os.environ, "HOME": str(self.home)}
        self.process = subprocess.Popen([str(binary), "--config", str(config), "--local", "--quiet",
                                         "--log", str(self.home / "server.log")],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True, cwd=self.home)  # Dynamips writes its logs there
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
        if self._slot_file is not None:
            self._slot_file.close()
            self._slot_file = None
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
