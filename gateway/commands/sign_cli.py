"""``python -m gateway sign-command``: sign a command for people and scripts that publish
commands by hand (mosquitto_pub), with the same code the gateway verifies with."""

from __future__ import annotations

import json
import sys
import uuid

from gateway.commands.auth import key_from_env_or_file, sign


def main(args) -> int:
    try:
        key = key_from_env_or_file(args.key_file)
    except ValueError as exc:
        print("sign-command: key: %s" % exc, file=sys.stderr)
        return 2
    if key is None:
        print("sign-command: give --key-file or set STREETGRID_COMMAND_KEY", file=sys.stderr)
        return 2
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file).read()
        obj = json.loads(text)
    except (OSError, ValueError) as exc:
        print("sign-command: cannot read the command: %s" % exc, file=sys.stderr)
        return 2
    if not isinstance(obj, dict):
        print("sign-command: the command must be a JSON object", file=sys.stderr)
        return 2
    if args.id:
        obj["id"] = args.id
    obj.setdefault("id", uuid.uuid4().hex[:16])
    for k in ("ts", "nonce", "sig"):  # signing again makes a new command
        obj.pop(k, None)
    print(json.dumps(sign(obj, key)))
    return 0
