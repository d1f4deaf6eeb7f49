"""``python -m gateway``: run the gateway service, or decode MQTT batches for people.

    python -m gateway run --config FILE [--ready-file PATH] [--check-config]
    python -m gateway status (--url http://127.0.0.1:9600 | --stats DATA_DIR/stats.json) [--max-age S]
    python -m gateway sign-command --key-file KEY [--id ID] [FILE|-]
    python -m gateway decode-batch [FILE|-]
    python -m gateway decode-batch --mqtt mqtt://host:port [--topic T] [--count N] [--timeout S]

Exit status: 0 ok, 1 runtime failure (or --count not reached before --timeout), 2 bad
config, registry, arguments or input.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gateway", description="streetgrid gateway: run the service, decode MQTT batches")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the gateway service")
    run.add_argument("--config", required=True, help="gateway TOML config file")
    run.add_argument("--ready-file", help="write {udp_host, udp_port, pid} JSON here once serving")
    run.add_argument("--check-config", action="store_true",
                     help="validate the config and the registry it names, then exit (0 ok, 2 bad)")
    st = sub.add_parser("status", help="the gateway's state, from its HTTP endpoint or its "
                        "stats.json; exit 1 if unhealthy")
    src = st.add_mutually_exclusive_group(required=True)
    src.add_argument("--url", help="the gateway's [http] address, e.g. http://127.0.0.1:9600")
    src.add_argument("--stats", help="the gateway's <data_dir>/stats.json")
    st.add_argument("--max-age", type=float, default=60.0,
                    help="seconds after which the file means a gateway that is not running")
    sg = sub.add_parser("sign-command", help="sign a JSON command with the gateway's command "
                        "key (adds ts, nonce, sig; and id if missing); prints it")
    sg.add_argument("file", nargs="?", default="-", help="the command as JSON, '-' for stdin")
    sg.add_argument("--key-file", default="",
                    help="hex key file ([commands] key_file); default $STREETGRID_COMMAND_KEY")
    sg.add_argument("--id", help="the command id (default: the command's own, else a new one)")
    dec = sub.add_parser("decode-batch", help="print MQTT batches as JSON lines")
    dec.add_argument("file", nargs="?", default=None,
                     help="file with one or more CBOR batches back to back, '-' for stdin")
    dec.add_argument("--mqtt", metavar="URL", help="subscribe to mqtt://host:port instead")
    dec.add_argument("--topic", default="streetgrid/+/+/readings", help="MQTT topic filter")
    dec.add_argument("--count", type=int, help="exit after N batches")
    dec.add_argument("--timeout", type=float, help="give up after S seconds")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run" and args.check_config:
        from gateway.app import check_config
        return check_config(args.config)
    if args.command == "run":
        from gateway.app import main as run_main
        return run_main(args.config, args.ready_file)
    if args.command == "sign-command":
        from gateway.commands import sign_cli
        return sign_cli.main(args)
    if args.command == "status":
        from gateway.operations import status_cli
        return status_cli.main(args)
    from gateway.operations import decode_cli
    return decode_cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
