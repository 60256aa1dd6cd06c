"""The project's Ryu application and its launcher. This file runs inside Ryu's own virtual
environment (see controller/ryu_controller.py), never in the plugin's: Ryu 4.34 pins eventlet and dnspython
versions that clash with a modern environment.

    <ryu venv>/bin/python ryu_app.py --port 6653

The launcher starts Ryu's AppManager with the OpenFlow handler and this app only, instead of
`ryu-manager`, whose wsgi import fails on current eventlet (eventlet.wsgi.ALREADY_HANDLED is gone).

FlopynetSwitch, OpenFlow 1.3: a table-miss entry sends unknown traffic to the controller; the app
learns which port each MAC address sits behind, installs a flow once the destination is known
(idle timeout 30 s), and floods otherwise. Flows and ports are counted for statistics.
"""
import argparse
import sys

try:
    import eventlet.wsgi
    eventlet.wsgi.ALREADY_HANDLED = getattr(eventlet.wsgi, "ALREADY_HANDLED", object())
    from ryu.base import app_manager
    from ryu.controller import ofp_event
    from ryu.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
    from ryu.lib.packet import ethernet, packet
    from ryu.ofproto import ofproto_v1_3
except ImportError:  # imported by the plugin only for its path; Ryu lives in its own environment
    app_manager = None

if app_manager is not None:
    class FlopynetSwitch(app_manager.RyuApp):
        OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.mac_to_port = {}

        @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
        def switch_features(self, ev):
            dp = ev.msg.datapath
            parser, ofp = dp.ofproto_parser, dp.ofproto
            self._flow(dp, 0, parser.OFPMatch(), [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)])
            print(f"switch {dp.id:016x} connected", flush=True)

        def _flow(self, dp, priority, match, actions, idle=0):
            parser, ofp = dp.ofproto_parser, dp.ofproto
            inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
            dp.send_msg(parser.OFPFlowMod(datapath=dp, priority=priority, match=match, instructions=inst,
                                          idle_timeout=idle))

        @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
        def packet_in(self, ev):
            msg = ev.msg
            dp = msg.datapath
            parser, ofp = dp.ofproto_parser, dp.ofproto
            in_port = msg.match["in_port"]
            eth = packet.Packet(msg.data).get_protocols(ethernet.ethernet)[0]
            table = self.mac_to_port.setdefault(dp.id, {})
            table[eth.src] = in_port
            out = table.get(eth.dst, ofp.OFPP_FLOOD)
            actions = [parser.OFPActionOutput(out)]
            if out != ofp.OFPP_FLOOD:
                self._flow(dp, 1, parser.OFPMatch(in_port=in_port, eth_dst=eth.dst), actions, idle=30)
            data = msg.data if msg.buffer_id == ofp.OFP_NO_BUFFER else None
            dp.send_msg(parser.OFPPacketOut(datapath=dp, buffer_id=msg.buffer_id, in_port=in_port, actions=actions,
                                            data=data))


def main() -> int:
    p = argparse.ArgumentParser(description="Ryu with the flopynet app, OpenFlow 1.3")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
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
