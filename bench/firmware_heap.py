"""Heap of the firmware as shipped (ROMFS image) on the real MicroPython VM, pole and meter:
after boot, after join, and the peak of a join (the polls up to the join-accept), a report
(the polls that build and send the first uplink after the join) and a downlink (the polls
from a dim / relay command's delivery until it is handled). Budget (issue #10): <= 64 KB held
after boot and after join, <= 96 KB peak. Sizes of the image and its bytecode too.

Usage: python bench/firmware_heap.py

Held = gc.mem_alloc() after two collections in separate calls (VMBoard.heap()); peak = the
same, then one poll with the GC disabled, read at its end (VMBoard.poll_peak): an upper bound.
The figures include the simulator's fakes and chip models (objects on the heap; their bytecode
is in a second ROMFS image, like the firmware's, off the heap).

Steady state (measure_steady): the most held after any uplink over two hours of reports and a
command, then through a rejoin; and the qstr count (the interned-string pool takes a 9 KB block
at its 1,261st string).

Modbus (measure_modbus): a meter with interfaces "both" (the default: RS-485 slave and LoRaWAN)
after boot serves the gateway's two reads (the SDM630 float block, 80 registers, and the exact
Wh counters), each written into its UART's receive side, and the slave polled character by
character until the reply has left: the peak of those polls, and that both replies came back
with a valid CRC.

Usage: python bench/firmware_heap.py [--board NAME]   (default: the config's default board)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

APP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
DEV_EUI = "70b3d57ed0000011"
POLE_CFG = {"kind": "pole", "dev_eui": DEV_EUI, "join_eui": "70b3d57ed0000000",
            "app_key": APP_KEY.hex(), "join_jitter_s": 0, "report_interval_s": 300}
METER_CFG = dict(POLE_CFG, kind="meter", interfaces="lorawan", phases=3, energy_step_wh=5)
ENV = {"pole": {"lux": 5.0, "temperature_c": 12.5, "humidity_rh": 70.0, "power_w": 41.0},
       "meter": {"power_w": 3000.0, "voltage_v": 230.0, "line_hz": 50.0}}
COMMAND = {"pole": ("dim", {"seq": 1, "level": 40}),
           "meter": ("relay", {"seq": 1, "action": "open"})}
# with the command, what a network server typically sends after a join: ADR settings (here
# keeping data rate, power and channels) and a status request
MAC_COMMANDS = ({"name": "LinkADRReq", "data_rate": 15, "tx_power": 15, "ch_mask": 0,
                 "ch_mask_cntl": 6, "nb_trans": 1}, {"name": "DevStatusReq"})
HELD_BUDGET = 65536
PEAK_BUDGET = 98304


class Network:
    """The network server's side, in CPython: answers the join in RX1 (5 s), opens uplinks,
    and sends one downlink command, with MAC_COMMANDS in its FOpts, in the RX1 window (1 s) of
    the first uplink after join."""

    def __init__(self, board, downlink=None):
        from protocol.lorawan import airtime
        self.toa = airtime.time_on_air_us
        self.board = board
        self.downlink = downlink  # (fport, payload) or None
        self.keys = None
        self.uplinks = 0
        self.pending = None  # (at_ms, freq, sf, bw, phy)
        self.delivered_at = None

    def on_tx(self, tx):
        from protocol.lorawan import frame, network_side, session
        from protocol.lorawan import join as lw_join
        start, freq, sf, bw, _power, phy = tx
        end = start + -(-self.toa(len(phy), sf, bw) // 1000)
        if phy[0] >> 5 == frame.JOIN_REQUEST:
            jr = network_side.open_join_request(phy, APP_KEY, backend="cryptography")
            self.keys = lw_join.derive_session_keys(APP_KEY, 0x101, 0x13, jr.dev_nonce,
                                                     backend="cryptography")
            phy = network_side.build_join_accept(APP_KEY, 0x101, 0x13, 0x26011F3A, 0, 0, 1,
                                                 backend="cryptography")
            self.pending = (end + 5000, freq, sf, bw, phy)
            return
        self.uplinks += 1
        if self.downlink is not None:
            fport, data = self.downlink
            self.downlink = None
            phy = session.build_data_frame(frame.UNCONFIRMED_DOWN, 0x26011F3A, 0, fport, data,
                                           self.keys[0], self.keys[1], fopts=list(MAC_COMMANDS),
                                           backend="cryptography")
            self.pending = (end + 1000, freq, sf, bw, phy)

    def offer(self):
        if self.pending is None:
            return
        at, freq, sf, bw, phy = self.pending
        radio = self.board.radio
        if radio.rx_window() is not None and radio.catches(freq, sf, bw, at * 1000):
            radio.deliver(phy, -70, 8.5, at + -(-self.toa(len(phy), sf, bw) // 1000))
            self.pending = None
            if phy[0] >> 5 != 1:  # the command, not the join-accept
                self.delivered_at = at


def _board_and_network(kind, interfaces, board, board_kw):
    """A VM board of `kind` (a board profile if given) in its environment, and the network
    that answers its join and sends it COMMAND."""
    from protocol import payload
    from sim.vmboard import VMBoard

    cfg = dict(POLE_CFG) if kind == "pole" else dict(METER_CFG, interfaces=interfaces)
    if board is not None:
        cfg["board"] = board
    b = VMBoard(kind, DEV_EUI, cfg, strict=True, **board_kw)
    try:
        b.apply_env(ENV[kind])
        return b, Network(b, payload.encode_downlink(kind, *COMMAND[kind]))
    except BaseException:
        b.close()
        raise


def measure(kind, board=None, interfaces="lorawan", **board_kw):
    """{"boot", "join", "peak_join", "peak_report", "peak_downlink"} heap bytes of one board,
    "delivered" (the command reached the RX window) and "commanded" (the pole's dimmer duty_u16,
    the meter's relay_closed() after it). board: a radio_board profile name (default: the
    config's default board); interfaces: a meter's (default "lorawan": its RS-485 slave is
    measured by measure_modbus)."""
    b, net = _board_and_network(kind, interfaces, board, board_kw)
    try:
        out = {"boot": None, "join": None, "peak_join": 0, "peak_report": 0,
               "peak_downlink": 0}
        b.boot(0)
        out["boot"] = b.heap()["alloc"]
        t = 0
        phase = "peak_join"
        while t < 30 * 60 * 1000:
            for tx in b.radio.pending_tx():
                net.on_tx(tx)
            net.offer()
            t = b.next_wake_ms()
            _, peak = b.poll_peak(t)
            out[phase] = max(out[phase], peak)
            if phase == "peak_join" and b.eval("app.mac.joined"):
                out["join"] = b.heap()["alloc"]
                phase = "peak_report"
            elif phase == "peak_report" and net.delivered_at is not None:
                phase = "peak_downlink"
            elif phase == "peak_downlink" and t > net.delivered_at + 2000:
                break
        out["delivered"] = net.delivered_at is not None
        # the command took effect: the pole dimmed to 40 %, the meter's relay opened
        out["commanded"] = (b.outputs()["dimmer_duty_u16"] if kind == "pole"
                            else b.eval("board.hardware.relay_closed()"))
        return out
    finally:
        b.close()


STEADY_HOURS = 2


def measure_steady(kind, interfaces="lorawan", board=None, hours=STEADY_HOURS, **board_kw):
    """{"held", "uplinks", "joins", "qstrs", "qstr_pools", "modules"}: the most a joined device
    holds after any of its uplinks over `hours` of virtual time (reports every 5 minutes, the
    downlink command of COMMAND, the network answering nothing else), then through a rejoin
    and two uplinks of the new session: what it keeps once everything it does has run once,
    and what a rejoin leaves behind. The qstr count is the other limit: the interned-string
    pool grows by a 9 KB block at the 1,261st string on this VM."""
    import re

    b, net = _board_and_network(kind, interfaces, board, board_kw)
    try:
        b.boot(0)
        out = {"held": 0, "uplinks": 0, "joins": 0}
        t = 0
        seen = 0
        rejoined_at = None  # uplinks counted when the rejoin was asked for
        end = hours * 3600 * 1000
        while True:
            for tx in b.radio.pending_tx():
                net.on_tx(tx)
            net.offer()
            t = b.next_wake_ms()
            b.poll(t)
            if net.uplinks == seen:
                continue
            seen = net.uplinks
            out["held"] = max(out["held"], b.heap()["alloc"])
            if rejoined_at is None and t >= end:
                b.eval("app.mac.rejoin()")
                rejoined_at = seen
            elif rejoined_at is not None and seen >= rejoined_at + 2:
                break
        out["uplinks"] = seen
        out["joins"] = b.eval("app.mac.joins")
        b.eval("exec('import sys; print(\"modules:\", \" \".join(sorted(sys.modules)))')")
        out["modules"] = [line for line in b.firmware_output().splitlines()
                          if "modules:" in line][-1].split("modules:")[1].split()
        b.eval("exec('import micropython; micropython.qstr_info()')")
        pools, qstrs = re.findall(r"n_pool=(\d+), n_qstr=(\d+)", b.firmware_output())[-1]
        out["qstr_pools"], out["qstrs"] = int(pools), int(qstrs)
        return out
    finally:
        b.close()


MODBUS_READS = ((4, 0x0000, 80), (4, 0x1000, 8))  # a gateway's merged reads of one meter
MASTER_MODEL = """class Master:
    def __init__(self):
        self.out = b""
    def uart_write(self, data):
        self.out += data
    def uart_read(self, n):
        return b""
board.mb_master = port.attach(Master())
"""


def measure_modbus(board=None, **board_kw):
    """{"boot", "peak_modbus", "replies"}: heap of a meter with interfaces "both" after boot, the
    peak of its slave's polls while it answers MODBUS_READS, and how many valid replies came
    back (the requests go in through the fake UART; the slave runs at its own microsecond
    clock, as firmware.meter_loop drives it on the device)."""
    from protocol.modbus import pdu, rtu
    from protocol.modbus import master as MA
    from sim.vmboard import VMBoard

    cfg = dict(METER_CFG, interfaces="both", modbus_address=1, modbus_baud=9600)
    if board is not None:
        cfg["board"] = board
    b = VMBoard("meter", DEV_EUI, cfg, strict=True, **board_kw)
    try:
        b.apply_env(ENV["meter"])
        b.boot(0)
        # the master's end of the RS-485 pair (a model on the fake UART): keeps what the slave
        # sends; requests go straight into the port's receive buffer
        b.eval("exec(%r, {'port': app.hw.uart._port, 'board': board})" % MASTER_MODEL)
        out = {"boot": b.heap()["alloc"], "peak_modbus": 0, "replies": 0}
        port = "app.hw.uart._port"
        now_us = 0
        for fn, address, count in MODBUS_READS:
            adu = rtu.encode_frame(1, MA.encode_request(pdu.ReadRequest(fn, address, count)))
            b.eval("setattr(board.mb_master, 'out', b'') or setattr(%s, 'rx', %r)" % (port, adu))
            for _ in range(2000):
                _, peak = b.eval_peak("app.slave.poll(%d)" % now_us)
                out["peak_modbus"] = max(out["peak_modbus"], peak)
                now_us += 1000  # about a character at 9600 baud
                reply = bytes.fromhex(b.eval("board.mb_master.out"))
                n = len(reply)
                if n and n == MA.response_frame_length(pdu.ReadRequest(fn, address, count)) \
                        and not b.eval("app.slave.busy()"):
                    rtu.decode_frame(reply)  # raises on a bad CRC
                    out["replies"] += 1
                    break
            now_us += 20000  # the master's gap before its next request
        return out
    finally:
        b.close()


def image_sizes():
    from fieldkit import image
    modules, img = image.build()
    return len(modules), len(img), sum(len(v) for v in image.read_romfs(img).values())


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(prog="python bench/firmware_heap.py")
    ap.add_argument("--board", help="radio board profile (default: the config's default)")
    args = ap.parse_args(argv)
    n, size, code = image_sizes()
    print("firmware image: %d modules, %d bytes, bytecode %d bytes" % (n, size, code))
    print("board: %s" % (args.board or "default"))
    print("%-6s %8s %8s %10s %12s %14s" % ("", "boot", "join", "peak join", "peak report",
                                           "peak downlink"))
    for kind in ("pole", "meter"):
        m = measure(kind, board=args.board)
        print("%-6s %8d %8d %10d %12d %14d" % (kind, m["boot"], m["join"], m["peak_join"],
                                               m["peak_report"], m["peak_downlink"]))
    m = measure("meter", board=args.board, interfaces="both")
    print("%-6s %8d %8d %10d %12d %14d   (interfaces both)" % (
        "meter", m["boot"], m["join"], m["peak_join"], m["peak_report"], m["peak_downlink"]))
    mb = measure_modbus(board=args.board)
    print("meter, interfaces both: boot %d, peak of a Modbus request %d (%d/%d replies)"
          % (mb["boot"], mb["peak_modbus"], mb["replies"], len(MODBUS_READS)))
    print("steady state (%d h of reports and a command, then a rejoin): most held after an "
          "uplink" % STEADY_HOURS)
    boards = [args.board] if args.board else ["streetgrid-sx1276", "streetgrid-sx1262"]
    for board in boards:
        for kind, interfaces in (("pole", None), ("meter", "lorawan"), ("meter", "both")):
            m = measure_steady(kind, interfaces or "lorawan", board=board)
            print("%-18s %-6s %-8s held %6d after %d uplinks, %d joins; %d qstrs in %d pools" % (
                board, kind, interfaces or "", m["held"], m["uplinks"], m["joins"], m["qstrs"],
                m["qstr_pools"]))
    print("budget: held <= %d, peak <= %d" % (HELD_BUDGET, PEAK_BUDGET))


if __name__ == "__main__":
    main()
