"""streetgrid-field: the technician's tool, one subcommand per job on site.

Each subcommand is an entry in COMMANDS: a function that adds its arguments to its parser and
a function that runs it and returns the exit status. Command modules keep their heavy imports
(esptool for flash) inside the functions that run, so one subcommand's dependencies never
slow down or break another. A failure is printed as one line, "streetgrid-field: error: ...",
on stderr, with exit status 1 (2 for a usage error, as argparse does).
"""

import argparse
import sys

PROG = "streetgrid-field"


def _flash_arguments(parser):
    from fieldkit.flash import CHIPS, DEFAULT_BAUD, DEFAULT_CONNECT_ATTEMPTS

    parser.add_argument("--port", "-p", required=True, help="serial port, e.g. /dev/ttyUSB0")
    parser.add_argument("--chip", "-c", required=True, choices=sorted(CHIPS),
                        help="the board's chip: esp32 (image at 0x1000) or esp32s3 (at 0x0)")
    parser.add_argument("--firmware", "-f", required=True, metavar="FILE.bin",
                        help="MicroPython firmware image for that chip")
    parser.add_argument("--baud", "-b", type=int, default=DEFAULT_BAUD,
                        help="baud rate for the transfer (default %(default)s; the "
                             "bootloader is always reached at 115200 first)")
    parser.add_argument("--no-stub", action="store_true",
                        help="talk to the ROM loader only (slower; no full erase)")
    parser.add_argument("--connect-attempts", type=int, default=DEFAULT_CONNECT_ATTEMPTS,
                        help="how many times to try reaching the bootloader "
                             "(default %(default)s)")


def _flash_run(args):
    from fieldkit.flash import FlashError, flash

    try:
        flash(args.port, args.chip, args.firmware, baud=args.baud, stub=not args.no_stub,
              connect_attempts=args.connect_attempts)
    except FlashError as e:
        return _fail(e)
    return 0


def _provision_common(parser):
    parser.add_argument("--registry", "-r", default="devices.toml",
                        help="the gateway's device registry file (default %(default)s); "
                             "created if missing")
    parser.add_argument("--site", default="unassigned", help="site name for the registry")
    parser.add_argument("--join-eui", default=None,
                        help="JoinEUI (default 0000000000000000: no join server)")


def _provision_arguments(parser):
    parser.add_argument("--port", "-p", required=True, help="serial port, e.g. /dev/ttyUSB0")
    parser.add_argument("--kind", required=True, choices=("pole", "meter"))
    parser.add_argument("--dev-eui", required=True, help="the DevEUI on the board's label")
    parser.add_argument("--app-key", default=None,
                        help="AppKey (default: a fresh one from the OS's random source)")
    parser.add_argument("--board", default=None,
                        help="radio board name (see the technician guide; default the "
                             "streetgrid board)")
    parser.add_argument("--name", default=None, help="device name (default KIND-<last 6 of "
                                                       "the DevEUI>)")
    _provision_common(parser)
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE", help="a config setting, e.g. "
                        "report_interval_s=300 or latitude=52.37 (repeatable)")
    parser.add_argument("--label", default=None, metavar="FILE.svg|FILE.png",
                        help="also write the label to this file")
    parser.add_argument("--reconfigure", action="store_true",
                        help="the device is registered already: keep its JoinEUI and AppKey "
                             "and write the new config only (e.g. after calibration)")


def _provision_errors():
    from fieldkit.board_link import BoardError
    from fieldkit.device_config import DeviceConfigError
    from fieldkit.registry_file import RegistryError

    return (BoardError, DeviceConfigError, RegistryError, ValueError, OSError)


def _provision_run(args):
    from fieldkit import device_config
    from fieldkit.provision import NO_JOIN_SERVER, provision

    try:
        settings = [device_config.parse_setting(s) for s in args.settings]
        provision(args.port, args.kind, args.dev_eui, args.registry,
                  join_eui=args.join_eui or NO_JOIN_SERVER, app_key=args.app_key,
                  board=args.board, site=args.site, name=args.name, settings=settings,
                  label_path=args.label, resume=args.reconfigure)
    except _provision_errors() as e:
        return _fail(_one_line(e))
    return 0


def _batch_arguments(parser):
    parser.add_argument("--csv", required=True, metavar="FILE.csv",
                        help="one device per row: kind, dev_eui and optional port, name, site, "
                             "board, join_eui, app_key, label, or any config key")
    parser.add_argument("--port", "-p", default=None,
                        help="serial port for rows without a port column")
    _provision_common(parser)
    parser.add_argument("--label-dir", default=None,
                        help="write each device's label as DIR/<DevEUI>.svg")


def _batch_run(args):
    from fieldkit import batch
    from fieldkit.provision import NO_JOIN_SERVER

    bar = _progress_bar()
    try:
        with bar:
            task = bar.add_task("provisioning", total=None)
            now, skipped = batch.run(args.csv, args.registry, port=args.port, site=args.site,
                                     join_eui=args.join_eui or NO_JOIN_SERVER,
                                     label_dir=args.label_dir, out=print,
                                     progress=lambda done, total: bar.update(
                                         task, completed=done, total=total))
    except _provision_errors() + (batch.BatchError,) as e:
        return _fail(_one_line(e) + " (fix it and run the same command again: done rows "
                     "are skipped)")
    print("batch: %d provisioned, %d already done before" % (now, skipped))
    return 0


def _progress_bar():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    # a bar only for a person at a terminal: logs and pipes get the plain lines
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    console=console, disable=not console.is_terminal)


def _one_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(error).__name__


def _deploy_arguments(parser):
    parser.add_argument("--port", "-p", required=True, help="serial port, e.g. /dev/ttyUSB0")


def _deploy_run(args):
    from fieldkit.board_link import BoardError
    from fieldkit.deploy import deploy

    try:
        deploy(args.port)
    except (BoardError, RuntimeError, OSError) as e:
        return _fail(_one_line(e))
    return 0


def _verify_arguments(parser):
    from fieldkit.verify import DEFAULT_TIMEOUT_S

    parser.add_argument("--port", "-p", required=True, help="serial port, e.g. /dev/ttyUSB0")
    side = parser.add_mutually_exclusive_group()
    side.add_argument("--gateway-stats", metavar="FILE",
                      help="the gateway's stats.json (<data_dir>/stats.json), to see the "
                           "device's join and first uplink there")
    side.add_argument("--mqtt", metavar="URL", help="the broker the gateway publishes to "
                      "(mqtt://HOST:PORT), to see the device's first readings there")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds to wait for the boot, the join and the first report "
                             "(default %(default)s)")
    parser.add_argument("--no-reset", action="store_true",
                        help="do not reset the board: listen to a boot you start yourself")


def _verify_run(args):
    from fieldkit.board_link import BoardError
    from fieldkit.verify import VerifyFailed, verify

    try:
        verify(args.port, gateway_stats=args.gateway_stats, mqtt_url=args.mqtt,
               timeout_s=args.timeout, reset=not args.no_reset,
               out=lambda line: print(line, flush=True))
    except VerifyFailed as e:
        print("verify: FAIL: %s" % _one_line(e), flush=True)
        return 1
    except (BoardError, OSError) as e:
        return _fail(_one_line(e))
    return 0


COMMANDS = {
    # name: (help, add_arguments(parser), run(args) -> exit status)
    "flash": ("erase the board and write a MicroPython firmware image (esptool)",
              _flash_arguments, _flash_run),
    "deploy": ("install this checkout's firmware image and /main.py on the board (skips what "
               "is already there)", _deploy_arguments, _deploy_run),
    "provision": ("write a device's config, register it with the gateway and print its label",
                  _provision_arguments, _provision_run),
    "batch": ("provision the devices of a CSV file in a row; resumes where it stopped",
              _batch_arguments, _batch_run),
    "verify": ("reset the board and check its boot, join and first report on the console and "
               "at the gateway; ends with PASS or FAIL", _verify_arguments, _verify_run),
}


def _fail(error):
    print("%s: error: %s" % (PROG, error), file=sys.stderr, flush=True)
    return 1


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command)
        command.set_defaults(run=run)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return _fail("interrupted")


if __name__ == "__main__":
    sys.exit(main())
