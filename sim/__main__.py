"""`python -m sim demo ...` / `python -m sim meter ...`: the simulator's command line (see
sim/demo.py and sim/meter.py)."""

import argparse
import sys

from sim import demo


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a number" % text) from None
        if value <= 0:
            raise argparse.ArgumentTypeError("must be > 0, got %s" % text)
        return value
    return parse


def _count(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0, got %s" % text)
    return value


def _broker_url(text):
    import sim.broker
    try:
        return sim.broker.External(text).url
    except sim.broker.BrokerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser():
    p = argparse.ArgumentParser(prog="python -m sim")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="emulated poles -> forwarders -> gateway -> MQTT, live",
                       description=demo.__doc__.splitlines()[0])
    dd = demo.DEFAULTS
    d.add_argument("--poles", type=_positive(int), default=dd["poles"], metavar="N",
                   help="street poles (default %(default)s)")
    d.add_argument("--forwarders", type=_positive(int), default=dd["forwarders"], metavar="M",
                   help="packet forwarders (default %(default)s)")
    d.add_argument("--meters", type=_count, default=dd["meters"], metavar="N",
                   help="AMI meters reporting over LoRaWAN in the city (default %(default)s)")
    d.add_argument("--bus-meters", type=_count, default=dd["bus_meters"], metavar="N",
                   help="AMI meters on an emulated RS-485 bus polled by the gateway over "
                        "Modbus RTU (default %(default)s; 0 = no bus)")
    d.add_argument("--duration", type=_positive(float), default=dd["duration"], metavar="S",
                   help="virtual seconds to simulate (default %(default)g = 3 h)")
    d.add_argument("--speed", type=_positive(float), default=dd["speed"], metavar="X",
                   help="virtual seconds per real second (default %(default)g)")
    d.add_argument("--broker", type=_broker_url, metavar="mqtt://HOST:PORT",
                   help="use this broker (default: start mosquitto if installed, else an "
                        "embedded amqtt broker)")
    d.add_argument("--vm-poles", type=_count, default=None, metavar="K",
                   help="poles whose firmware runs on the MicroPython VM (default 1 when node "
                        "and the npm package are installed, else 0)")
    d.add_argument("--report-interval", type=_positive(int), default=dd["report_interval_s"],
                   metavar="S", help="poles' report interval in seconds (default %(default)s)")
    d.add_argument("--seed", type=int, default=dd["seed"], help="simulation seed")
    d.add_argument("--workdir", metavar="DIR",
                   help="keep the gateway's config, registry, data and log here (default: a "
                        "temporary directory, removed at the end)")
    m = sub.add_parser("meter", help="emulated AMI meters (Modbus RTU slaves) on one serial "
                                     "device, until killed",
                       description="Run emulated AMI meters (the meter firmware's Modbus RTU "
                                   "slave and metering chain), one per address, on one RS-485 "
                                   "line model on an existing serial device, e.g. one end of a "
                                   "socat pty pair, with bytes paced at the baud rate.")
    m.add_argument("--serial", required=True, metavar="PATH", help="serial device or pty")
    m.add_argument("--address", type=_addresses, default=[1], metavar="A[,B,...]",
                   help="Modbus slave addresses 1..247, one meter each (default 1)")
    m.add_argument("--baud", type=_baud, default=9600, metavar="B",
                   help="baud rate, one of %s (default %%(default)s)" % _baud_list())
    m.add_argument("--phases", type=int, choices=(1, 3), default=3, help="default 3")
    m.add_argument("--turnaround-ms", type=_count, default=None, metavar="MS",
                   help="the meter's processing time before it answers (default 5)")
    m.add_argument("--noise", type=_rate, default=0.0, metavar="P",
                   help="fraction of replies with a bit flipped by line noise (CRC error)")
    m.add_argument("--silence", type=_rate, default=0.0, metavar="P",
                   help="fraction of requests left unanswered")
    m.add_argument("--garbage", type=_rate, default=0.0, metavar="P",
                   help="fraction of replies followed by random bytes")
    m.add_argument("--seed", type=int, default=0, help="fault injection seed")
    m.add_argument("--nvs", metavar="FILE",
                   help="keep the meters' committed NVS in FILE (written atomically on every "
                        "commit; a killed process is a power cut, the next run boots from it). "
                        "Meters are kept by the address given here: run again with the same "
                        "--address list; an address a Modbus write changed stays in force")
    m.add_argument("--load-w", type=_loads, default=None, metavar="W[,W2,...]",
                   help="constant net power per meter in W (< 0 = export), split over its "
                        "phases; one value for all meters or one per address (default: a "
                        "varying household load)")
    m.add_argument("--energy-step-wh", type=_positive(int), default=None, metavar="WH",
                   help="commit the energy register every WH Wh (default 50, the firmware's)")
    return p


def _rate(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a rate is 0..1, got %s" % text)
    return value


def _slave_address(text):
    value = _count(text)
    if not 1 <= value <= 247:
        raise argparse.ArgumentTypeError("a slave address is 1..247, got %s" % text)
    return value


def _addresses(text):
    out = []
    for part in text.split(","):
        a = _slave_address(part.strip())
        if a in out:
            raise argparse.ArgumentTypeError("address %d given twice" % a)
        out.append(a)
    return out


def _loads(text):
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a list of numbers" % text) from None


def _baud_list():
    from protocol.modbus.registers import BAUD_RATES
    return ", ".join(str(b) for b in BAUD_RATES)


def _baud(text):
    from protocol.modbus.registers import BAUD_RATES
    value = _count(text)
    if value not in BAUD_RATES:
        raise argparse.ArgumentTypeError("baud must be one of %s, got %s" % (_baud_list(), text))
    return value


def _meter(args):
    from sim import meter
    from sim.nvs_file import NvsFileError
    turn = meter.DEFAULT_TURNAROUND_MS if args.turnaround_ms is None else args.turnaround_ms

    def ready(text):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    faults = None
    if args.noise or args.silence or args.garbage:
        faults = (args.noise, args.silence, args.garbage)
    step = meter.DEFAULT_ENERGY_STEP_WH if args.energy_step_wh is None else args.energy_step_wh
    try:
        return meter.run(args.serial, args.address, args.baud, args.phases, turn, ready=ready,
                         faults=faults, load_w=args.load_w, energy_step_wh=step,
                         nvs_path=args.nvs, seed=args.seed)
    except NvsFileError as e:
        sys.stderr.write("python -m sim meter: %s\n" % e)
        return 2
    except OSError as e:
        if e.filename is None:
            raise
        sys.stderr.write("python -m sim meter: cannot open %s: %s\n" % (e.filename, e.strerror))
        return 2


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "meter":
        if args.load_w is not None and len(args.load_w) not in (1, len(args.address)):
            build_parser().error("--load-w: give one value or one per address (%d), got %d"
                                 % (len(args.address), len(args.load_w)))
        return _meter(args)
    if args.vm_poles is not None and args.vm_poles > args.poles:
        build_parser().error("--vm-poles (%d) is more than --poles (%d)" % (args.vm_poles,
                                                                             args.poles))
    return demo.Demo(poles=args.poles, forwarders=args.forwarders, duration=args.duration,
                     broker=args.broker, speed=args.speed, vm_poles=args.vm_poles,
                     seed=args.seed, report_interval_s=args.report_interval,
                     workdir=args.workdir, meters=args.meters,
                     bus_meters=args.bus_meters).run()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before the demo took over the signal: nothing to stop
        sys.exit(130)
