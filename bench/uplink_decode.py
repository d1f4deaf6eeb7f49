"""Gateway path benchmark: verify MIC, decrypt and decode data uplinks, per second on one core.

Usage: python bench/uplink_decode.py [--frames N] [--devices D]

Each device has its own session keys, as in a real fleet, so the per-key cipher caches are
exercised as they would be by the network server. Prints frames/s and microseconds per frame.
Goal (issue #2): >= 50,000 uplinks/s.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from protocol import payload  # noqa: E402
from protocol.lorawan import frame as lw_frame  # noqa: E402
from protocol.lorawan import session  # noqa: E402


def make_fleet(devices, frames_per_device):
    fleet = []
    for d in range(devices):
        nwk = os.urandom(16)
        app = os.urandom(16)
        addr = 0x26000000 + d
        for i in range(frames_per_device):
            fport, data = payload.encode_uplink(
                "pole",
                "report",
                {
                    "dim_level": (d + i) % 101,
                    "lamp_power": 35.5 + (i % 10),
                    "lamp_energy": 12345 + i,
                    "ambient_light": 20 + i % 500,
                    "temperature": 12.5,
                    "humidity": 55.0,
                },
            )
            phy = session.build_data_frame(lw_frame.UNCONFIRMED_UP, addr, 70000 + i, fport, data, nwk, app)
            fleet.append((phy, nwk, app, 70000 + i - 1))
    return fleet


def run(fleet):
    t0 = time.perf_counter()
    ok = 0
    for phy, nwk, app, last in fleet:
        opened = session.open_data_frame(phy, nwk, app, last_fcnt=last)
        if opened.mic_ok:
            payload.decode_uplink(opened.frame.fport, opened.payload)
            ok += 1
    return time.perf_counter() - t0, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--devices", type=int, default=1000)
    args = ap.parse_args()
    per_dev = max(1, args.frames // args.devices)
    fleet = make_fleet(args.devices, per_dev)
    run(fleet[:2000])  # warm up
    best = None
    for _ in range(3):
        elapsed, ok = run(fleet)
        assert ok == len(fleet), "MIC failures in the benchmark: %d of %d" % (len(fleet) - ok, len(fleet))
        best = elapsed if best is None else min(best, elapsed)
    rate = len(fleet) / best
    print("gateway uplink path (verify MIC + decrypt + decode), %d devices, %d frames, best of 3:" % (args.devices, len(fleet)))
    print("  %.0f uplinks/s, %.2f us/uplink (goal >= 50,000/s)" % (rate, 1e6 / rate))


if __name__ == "__main__":
    main()
