"""Device path benchmark on the real MicroPython VM: encode a pole report, build the uplink
(pure-Python AES encrypt + CMAC MIC), and measure time and heap growth per uplink.

Usage: python bench/device_uplink.py [--uplinks N]

The modules are compiled with mpy-cross first, as a board is deployed.
Heap growth is `gc.mem_alloc()` after building one uplink minus before it, with a collection
before each; the peak over all uplinks is reported. Imports and the session's two AES key
schedules happen once (at boot and at join) and are reported apart. Goal (issue #2): under 8 KB per uplink.
The VM is WebAssembly on a desktop CPU: its times are not ESP32 times, but its allocation
counts are MicroPython's.
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sim.mpvm  # noqa: E402

SCRIPT = """
import gc, time
gc.collect(); m0 = gc.mem_alloc()
from protocol import payload, cipher
from protocol.lorawan import frame, session
import protocol.aes
gc.collect(); imports = gc.mem_alloc() - m0
nwk = bytes(range(16)); app = bytes(range(16, 32))
gc.collect(); m0 = gc.mem_alloc()
cipher.ecb(nwk, "pure"); cipher.ecb(app, "pure")  # key schedules, once per session (at join)
gc.collect(); setup = gc.mem_alloc() - m0
fields = {"dim_level": 70, "lamp_power": 35.5, "lamp_energy": 12345, "ambient_light": 20,
          "temperature": 12.5, "humidity": 55.0}
N = %d
peak = 0; total = 0; busy = 0
for i in range(N):
    gc.collect()
    before = gc.mem_alloc()
    t0 = time.ticks_us()
    fields["lamp_energy"] = 12345 + i
    fport, data = payload.encode_uplink("pole", "report", fields)
    phy = session.build_data_frame(frame.UNCONFIRMED_UP, 0x26011234, i, fport, data, nwk, app, backend="pure")
    busy += time.ticks_diff(time.ticks_us(), t0)
    grew = gc.mem_alloc() - before
    total += grew
    if grew > peak: peak = grew
print(len(phy), peak, total // N, busy // N, imports, setup)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uplinks", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tree = sim.mpvm.compile_tree("protocol", tmp)
        out = sim.mpvm.run(SCRIPT % args.uplinks, mounts=[(tree, "/lib/protocol")]).split()
    phy_len, peak, mean, us, imports, setup = (int(x) for x in out)
    print("device uplink path on the MicroPython VM (pure-Python AES, .mpy modules), %d uplinks:" % args.uplinks)
    print("  PHYPayload %d bytes; heap growth per uplink: peak %d B, mean %d B (goal < 8192 B)" % (phy_len, peak, mean))
    print("  %d us per uplink on the VM (encode + encrypt + MIC)" % us)
    print("  one-time costs: imports of the .mpy modules %d B; session key schedules (2 keys) %d B" % (imports, setup))


if __name__ == "__main__":
    main()
