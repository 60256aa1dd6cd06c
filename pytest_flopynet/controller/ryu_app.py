"""The project's Ryu application and its launcher. This file runs inside Ryu's own virtual
environment (see controller/ryu_controller.py), never in the plugin's: Ryu 4.34 pins eventlet and dnspython
versions that clash with a modern environment.

    <ryu venv>/bin/python ryu_app.py --port 6653 --topology lab.json

The launcher starts Ryu's AppManager with the OpenFlow handler and this app only, instead of
`ryu-manager`, whose wsgi import fails on current eventlet (eventlet.wsgi.ALREADY_HANDLED is gone).

FlopynetRouter, OpenFlow 1.3, from the lab's topology file (switches with their datapath ids,
hosts with address, MAC, switch and port, trunks between switches with their ports):
- forwards IPv4 along shortest paths over the switch graph (networkx), one flow per switch and
  destination host;
- answers ARP for the lab's hosts itself (proxy ARP), so nothing is flooded and loops are harmless;
- reroutes when a port goes down or comes back (OFPPortStatus): the graph loses or regains the
  trunk and every switch gets its new flows;
- with `prioritize`, FL traffic (TCP to or from `fl_port`) has its own flows while all other IPv4
  goes through an OpenFlow meter that caps it at `background_kbps` per switch, so a flood cannot take
  the FL transfers' share;
- asks every switch for port and flow statistics each `stats_interval` seconds and writes them to
  `stats_file` (JSON), where the backend's monitor reads them.
"""
import argparse
import json
import os
import sys

try:
    import eventlet.wsgi
    eventlet.wsgi.ALREADY_HANDLED = getattr(eventlet.wsgi, "ALREADY_HANDLED", object())
    import networkx as nx
    from ryu.base import app_manager
    from ryu.controller import ofp_event
    from ryu.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
    from ryu.lib import hub
    from ryu.lib.packet import arp, ethernet, packet
    from ryu.ofproto import ofproto_v1_3
except ImportError:  # imported by the plugin only for its path; Ryu lives in its own environment
    app_manager = None

ROUTE_COOKIE = 0xF1

if app_manager is not None:
    class FlopynetRouter(app_manager.RyuApp):
        OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            with open(os.environ["FLOPYNET_TOPOLOGY"], encoding="utf-8") as f:  # set by main()
                self.topo = json.load(f)
            self.switch_of = {dpid: name for name, dpid in self.topo["switches"].items()}
            self.by_ip = {h["ip"]: h for h in self.topo["hosts"].values()}
            self.datapaths = {}
            self.down = set()  # (switch, port) pairs whose link is down
            self.stats = {"ports": {}, "flows": {}, "reroutes": 0}
            hub.spawn(self._poll_stats)

        # -- the graph and its routes ----------------------------------------------------------
        def graph(self):
            g = nx.Graph()
            g.add_nodes_from(sorted(self.topo["switches"]))
            for t in self.topo["trunks"]:
                if (t["a"], t["a_port"]) not in self.down and (t["b"], t["b_port"]) not in self.down:
                    g.add_edge(t["a"], t["b"], ports={t["a"]: t["a_port"], t["b"]: t["b_port"]})
            return g

        def routes(self, switch):
            """(destination IP, output port) for every host this switch can reach now."""
            g, out = self.graph(), []
            for host in self.topo["hosts"].values():
                if (host["switch"], host["port"]) in self.down:
                    continue
                if host["switch"] == switch:
                    out.append((host["ip"], host["port"]))
                elif nx.has_path(g, switch, host["switch"]):
                    nxt = nx.shortest_path(g, switch, host["switch"])[1]
                    out.append((host["ip"], g.edges[switch, nxt]["ports"][switch]))
            return out

        def install(self, dp):
            parser, ofp = dp.ofproto_parser, dp.ofproto
            dp.send_msg(parser.OFPFlowMod(datapath=dp, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
                                          out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, cookie=ROUTE_COOKIE,
                                          cookie_mask=0xFFFFFFFFFFFFFFFF))
            fl_port, prioritize = self.topo.get("fl_port", 7100), self.topo.get("prioritize", False)
            for ip, port in self.routes(self.switch_of[dp.id]):
                out = [parser.OFPActionOutput(port)]
                if prioritize:
                    for field in ("tcp_dst", "tcp_src"):
                        match = parser.OFPMatch(eth_type=0x0800, ipv4_dst=ip, ip_proto=6, **{field: fl_port})
                        self._flow(dp, 30, match, [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, out)])
                    inst = [parser.OFPInstructionMeter(1), parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, out)]
                else:
                    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, out)]
                self._flow(dp, 20, parser.OFPMatch(eth_type=0x0800, ipv4_dst=ip), inst)

        def _flow(self, dp, priority, match, instructions, cookie=ROUTE_COOKIE):
            dp.send_msg(dp.ofproto_parser.OFPFlowMod(datapath=dp, priority=priority, match=match, cookie=cookie,
                                                     instructions=instructions))

        # -- switches joining, ports changing ------------------------------------------------------
        @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
        def switch_features(self, ev):
            dp = ev.msg.datapath
            parser, ofp = dp.ofproto_parser, dp.ofproto
            to_controller = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
            apply = ofp.OFPIT_APPLY_ACTIONS
            self._flow(dp, 0, parser.OFPMatch(), [], cookie=0)  # table miss: drop
            self._flow(dp, 10, parser.OFPMatch(eth_type=0x0806), [parser.OFPInstructionActions(apply, to_controller)],
                       cookie=0)
            kbps = self.topo.get("background_kbps", {}).get(self.switch_of.get(dp.id, ""), 0)
            if self.topo.get("prioritize") and kbps:
                dp.send_msg(parser.OFPMeterMod(datapath=dp, command=ofp.OFPMC_ADD, flags=ofp.OFPMF_KBPS, meter_id=1,
                                               bands=[parser.OFPMeterBandDrop(rate=int(kbps),
                                                                              burst_size=max(int(kbps) // 10, 100))]))
            self.datapaths[dp.id] = dp
            self.install(dp)
            print(f"switch {self.switch_of.get(dp.id, dp.id)} connected", flush=True)

        @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
        def port_status(self, ev):
            msg = ev.msg
            dp, ofp = msg.datapath, msg.datapath.ofproto
            key = (self.switch_of.get(dp.id), msg.desc.port_no)
            is_down = bool(msg.desc.state & ofp.OFPPS_LINK_DOWN or msg.desc.config & ofp.OFPPC_PORT_DOWN)
            if is_down == (key in self.down):
                return
            (self.down.add if is_down else self.down.discard)(key)
            self.stats["reroutes"] += 1
            print(f"port {key[0]}:{key[1]} {'down' if is_down else 'up'}: rerouting", flush=True)
            for other in self.datapaths.values():
                self.install(other)

        # -- proxy ARP -----------------------------------------------------------------------------
        @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
        def packet_in(self, ev):
            msg = ev.msg
            dp = msg.datapath
            parser, ofp = dp.ofproto_parser, dp.ofproto
            pkt = packet.Packet(msg.data)
            request = pkt.get_protocol(arp.arp)
            if request is None or request.opcode != arp.ARP_REQUEST or request.dst_ip not in self.by_ip:
                return
            target = self.by_ip[request.dst_ip]
            reply = packet.Packet()
            reply.add_protocol(ethernet.ethernet(ethertype=0x0806, dst=request.src_mac, src=target["mac"]))
            reply.add_protocol(arp.arp(opcode=arp.ARP_REPLY, src_mac=target["mac"], src_ip=target["ip"],
                                       dst_mac=request.src_mac, dst_ip=request.src_ip))
            reply.serialize()
            dp.send_msg(parser.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                                            actions=[parser.OFPActionOutput(msg.match["in_port"])], data=reply.data))

        # -- statistics ----------------------------------------------------------------------------
        def _poll_stats(self):
            while True:
                for dp in list(self.datapaths.values()):
                    parser = dp.ofproto_parser
                    dp.send_msg(parser.OFPPortStatsRequest(dp, 0, dp.ofproto.OFPP_ANY))
                    dp.send_msg(parser.OFPFlowStatsRequest(dp))
                hub.sleep(self.topo.get("stats_interval", 1.0))

        @set_ev_cls(ofp_event.EventOFPPortStatsReply, MAIN_DISPATCHER)
        def port_stats(self, ev):
            name = self.switch_of.get(ev.msg.datapath.id)
            self.stats["ports"][name] = {
                str(s.port_no): {"rx_bytes": s.rx_bytes, "tx_bytes": s.tx_bytes, "rx_packets": s.rx_packets,
                                 "tx_packets": s.tx_packets, "rx_dropped": s.rx_dropped, "tx_dropped": s.tx_dropped}
                for s in ev.msg.body if s.port_no < 0xFFFFFF00}
            self._write_stats()

        @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
        def flow_stats(self, ev):
            name = self.switch_of.get(ev.msg.datapath.id)
            fl = [s for s in ev.msg.body if s.priority == 30]
            other = [s for s in ev.msg.body if s.priority == 20]
            self.stats["flows"][name] = {"flows": len(ev.msg.body), "fl_bytes": sum(s.byte_count for s in fl),
                                         "other_bytes": sum(s.byte_count for s in other)}
            self._write_stats()

        def _write_stats(self):
            path = self.topo.get("stats_file")
            if path:
                with open(path + ".tmp", "w", encoding="utf-8") as f:
                    json.dump(self.stats, f)
                os.replace(path + ".tmp", path)


def main() -> int:
    p = argparse.ArgumentParser(description="Ryu with the flopynet app, OpenFlow 1.3")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--topology", required=True, help="the lab's topology file (JSON)")
    args = p.parse_args()
    os.environ["FLOPYNET_TOPOLOGY"] = args.topology  # the app is imported afresh by Ryu's loader
    if app_manager is None:
        print("ryu_app: Ryu is not importable in this Python", file=sys.stderr)
        return 3
    from ryu import cfg
    from ryu.lib import hub
    hub.patch(thread=False)
    cfg.CONF(args=["--ofp-listen-host", args.host, "--ofp-tcp-listen-port", str(args.port)], project="ryu")
    manager = app_manager.AppManager.get_instance()
    manager.load_apps(["ryu.controller.ofp_handler", __name__ if __name__ != "__main__" else __file__])
    services = manager.instantiate_apps(**manager.create_contexts())
    print(f"listening on {args.host}:{args.port}", flush=True)
    hub.joinall(services)
    return 0


if __name__ == "__main__":
    sys.exit(main())
