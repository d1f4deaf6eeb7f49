"""Gateway ingest benchmark: uplinks/s end to end through ONE gateway process, latency, RSS, loss.

Usage: python bench/gateway_ingest.py [--devices 10000] [--rate 5000] [--seconds 30]
           [--rxpk 8] [--copies 1] [--senders 1] [--batch-bytes 16384] [--gateway auto]
           [--gateway-root DIR] [--warmup 5] [--json]

What runs (all real, on 127.0.0.1):
  * a mosquitto broker on a free port (tests/gateway/mosquitto.py);
  * the gateway under test as its own process: ``python -m gateway run --config FILE
    --ready-file PATH`` (``--gateway real``), or a stand-in built from the gateway's parts,
    ForwarderServer + RecordQueue + Publisher (``--gateway standin``, this file's ``--serve``;
    it was the harness before the service existed and runs trees that have no service, e.g.
    an older commit exported with ``git archive`` and given as ``--gateway-root``).  ``auto``
    picks real when available.  The config is the service's TOML (``--batch-bytes`` etc.);
  * load generator process(es): pre-built pole report frames (protocol.payload.encode_uplink +
    protocol.lorawan.session.build_data_frame, each device its own keys and FCnt, devices in a
    new random order each round) in PUSH_DATA datagrams of ``--rxpk`` frames each (8: a busy
    concentrator, 1: one frame per datagram), paced (sleeping, never spinning) to ``--rate``
    uplinks/s for ``--seconds``; every uplink may be heard by ``--copies`` forwarders;
  * a subscriber process (paho) on the readings topic that stamps every batch on arrival.

Devices: a registry TOML of ``--devices`` poles; their sessions are pre-populated in the
gateway's session store (gateway.lorawan.sessions.SessionStore.save_join with the LoRaWAN key
derivation) before the gateway starts, so no joins happen during the run.

Measured (printed): sustained uplinks/s = uplinks arriving at the subscriber between
``--warmup`` s after the first send and the last send, per second (and all uplinks over first
send to last arrival); latency per uplink = arrival of the MQTT batch holding its records -
send of its PUSH_DATA (both CLOCK_MONOTONIC, same host), p50/p99/max, overall and for uplinks
sent after the warm-up; lost (sent, never delivered), duplicates (delivered more than once)
and the datagrams the kernel dropped at the gateway's socket; uplinks are identified by (DevEUI
from ``bn``, FCnt from the "lora" metadata).  The gateway's RSS (/proc/<pid>/status VmHWM and
sampled VmRSS), its CPU per uplink and storage bytes written per uplink, CPU of every process
and of the whole machine per second (other work on the machine competes for the same cores:
read the numbers with that column), the gateway's own stats.json counters.
Goal (issue #3): >= 5,000 uplinks/s sustained, p99 < 500 ms, nothing lost.
It prints numbers; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
if os.environ.get("GATEWAY_ROOT"):  # the gateway code under test may come from another tree
    sys.path.insert(0, os.environ["GATEWAY_ROOT"])

NET_ID = 0x000013
JOIN_EUI = bytes.fromhex("70B3D57ED0000000")
GATEWAY_ID = "gw-bench"
SITE = "bench"
FREQS = (868100000, 868300000, 868500000)
SENML_BN = -2  # RFC 8428 CBOR label of "bn"


# ---- setup ------------------------------------------------------------------------------------

def device(i: int) -> tuple[bytes, bytes]:
    """(DevEUI, AppKey) of bench device i (deterministic)."""
    eui = bytes.fromhex("70B3D57EB0%06X" % i)
    return eui, bytes.fromhex("%032X" % (0x2B7E151628AED2A6ABF7158800000000 + i))


def write_registry(path: str, n: int) -> None:
    lines = []
    for i in range(n):
        eui, key = device(i)
        lines.append('[[device]]\nname = "pole-%05d"\nsite = "%s"\nkind = "pole"\n'
                     'dev_eui = "%s"\njoin_eui = "%s"\napp_key = "%s"\n'
                     % (i, SITE, eui.hex().upper(), JOIN_EUI.hex().upper(), key.hex().upper()))
    with open(path, "w") as f:
        f.write("\n".join(lines))


def populate_sessions(path: str, n: int) -> list[tuple[bytes, int, bytes, bytes]]:
    """Create one session per device in a SessionStore file -> [(dev_eui, dev_addr, nwk, app)]."""
    from gateway.lorawan.sessions import SessionStore
    from protocol.lorawan.security import derive_session_keys

    out = []
    store = SessionStore.for_net_id(path, NET_ID, synchronous="NORMAL")
    try:
        for i in range(n):
            eui, key = device(i)
            s = store.save_join(eui, 1, lambda jn, _addr, key=key: derive_session_keys(key, jn, NET_ID, 1),
                                time.time())
            out.append((eui, s.dev_addr, s.nwk_s_key, s.app_s_key))
    finally:
        store.close()
    return out


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: str, data_dir: str, udp_port: int, mqtt_port: int, args) -> None:
    with open(path, "w") as f:
        f.write(f"""[gateway]
id = "{GATEWAY_ID}"
site = "{SITE}"
region = "EU868"
net_id = {NET_ID:#08x}
data_dir = "{data_dir}"
registry = "devices.toml"
time_source = "gateway"

[udp]
host = "127.0.0.1"
port = {udp_port}

[dedup]
window_ms = {args.dedup_ms}

[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
topic_prefix = "streetgrid/"
max_batch_bytes = {args.batch_bytes}
max_batch_records = {args.batch_records}
max_batch_age_s = {args.batch_age}

[log]
level = "WARNING"
stats_interval_s = 1
""")


def real_gateway_available(root: str) -> bool:
    if not os.path.exists(os.path.join(root, "gateway", "__main__.py")):
        return False
    r = subprocess.run([sys.executable, "-m", "gateway", "run", "--help"], cwd=root,
                       capture_output=True, text=True)
    return r.returncode == 0 and "--ready-file" in r.stdout


# ---- load generator (its own process) ---------------------------------------------------------

def build_plan(sessions, total: int, copies: int, rxpk_per_dgram: int, forwarders: int, sender: int):
    """Pre-build this sender's datagrams: [(forwarder index, datagram bytes, [(eui, fcnt)])].

    Devices are taken in rounds so each device's FCnt rises in time (fresh sessions: 1, 2,..);
    each round visits them in a new random order (fixed seed), as devices reporting on their
    own timers do, so consecutive uplinks hit unrelated rows of the session store.
    """
    import random
    from protocol import gwmp, payload
    from protocol.lorawan import frame
    from protocol.lorawan.session import build_data_frame

    fcnts = [0] * len(sessions)
    frames = []
    rng = random.Random(sender)
    order = list(range(len(sessions)))
    for k in range(total):
        if k % len(sessions) == 0:
            rng.shuffle(order)
        d = order[k % len(sessions)]
        eui, addr, nwk, app = sessions[d]
        fcnts[d] += 1
        fc = fcnts[d]
        fport, body = payload.encode_uplink("pole", "report", {
            "dim_level": (d + fc) % 101, "lamp_power": 35.5 + fc % 10, "lamp_energy": 12345 + fc,
            "ambient_light": 20 + fc % 500, "temperature": 12.5, "humidity": 55.0})
        phy = build_data_frame(frame.UNCONFIRMED_UP, addr, fc, fport, body, nwk, app)
        frames.append((eui.hex(), fc, phy, FREQS[k % 3]))
    # every copy of a frame goes through a different forwarder; group per forwarder into datagrams
    dgrams = []
    token = 0
    for start in range(0, len(frames), rxpk_per_dgram):
        chunk = frames[start:start + rxpk_per_dgram]
        for c in range(copies):
            fw = (start // rxpk_per_dgram + c) % forwarders
            token = (token + 1) & 0xFFFF
            rx = [gwmp.Rxpk((start + j) * 1000 & 0xFFFFFFFF, f, "SF7BW125", phy, -80 - c, stat=1,
                            lsnr=7.5 - c, codr="4/5", chan=0, rfch=0)
                  for j, (_, _, phy, f) in enumerate(chunk)]
            eui = bytes.fromhex("AA555A%02X%08X" % (sender, fw))
            ids = [(e, fc) for e, fc, _, _ in chunk] if c == 0 else []
            dgrams.append((fw, gwmp.PushData(token, eui, rx).encode(), ids))
    return dgrams


JOIN_DELAYS_US = (5_000_000, 6_000_000)  # EU868 JOIN_ACCEPT_DELAY1/2: RX1 or RX2 answer


def do_joins(sender, devices, socks, port, rate, timeout_s=12.0):
    """Join every device through the gateway like forwarders would carry it: PULL_DATA first (the
    downlink path), then one join-request per device in PUSH_DATA at ``rate`` per second; each
    PULL_RESP is matched to its request by txpk.tmst (request tmst + RX1/RX2 delay), opened
    with the device's AppKey and turned into session keys.  -> (sessions, stats)."""
    from protocol import gwmp
    from protocol.lorawan.security import derive_session_keys
    from protocol.lorawan.session import build_join_request, open_join_accept

    addr = ("127.0.0.1", port)
    euis = [bytes.fromhex("AA555A%02X%08X" % (sender, fw)) for fw in range(len(socks))]
    mono = time.monotonic
    pending: dict[int, tuple[int, float]] = {}  # request tmst -> (device index, send time)
    joined: dict[int, tuple] = {}
    lat: list[float] = []
    stats = {"requests": 0, "accepts": 0, "rx2": 0, "bad": 0}
    token = [0]

    def pull():
        for i, sk in enumerate(socks):
            token[0] = (token[0] + 1) & 0xFFFF
            sk.sendto(gwmp.PullData(token[0], euis[i]).encode(), addr)

    def drain():
        for i, sk in enumerate(socks):
            while True:
                try:
                    data = sk.recv(65535)
                except BlockingIOError:
                    break
                try:
                    msg = gwmp.decode(data)
                except gwmp.GwmpError:
                    stats["bad"] += 1
                    continue
                if not isinstance(msg, gwmp.PullResp):
                    continue
                sk.sendto(gwmp.TxAck(msg.token, euis[i]).encode(), addr)  # "sent as asked"
                tx = msg.txpk
                for k, delay in enumerate(JOIN_DELAYS_US):
                    hit = pending.pop((tx.tmst - delay) & 0xFFFFFFFF, None)
                    if hit is not None:
                        break
                if hit is None:
                    stats["bad"] += 1
                    continue
                d, ts = hit
                eui, app_key = devices[d]
                ja = open_join_accept(tx.data, app_key)
                if not ja.mic_ok:
                    stats["bad"] += 1
                    continue
                lat.append(mono() - ts)
                stats["accepts"] += 1
                stats["rx2"] += k
                nwk, app = derive_session_keys(app_key, ja.join_nonce, ja.net_id, 1)
                joined[d] = (eui, ja.dev_addr, nwk, app)

    pull()
    time.sleep(0.2)
    drain()
    t0 = last_pull = mono()
    for d, (eui, app_key) in enumerate(devices):
        due = t0 + d / rate
        while mono() < due:
            drain()
            time.sleep(min(0.002, max(0.0, due - mono())))
        if mono() - last_pull > 5:
            pull()
            last_pull = mono()
        tmst = (d * 1000 + sender) & 0xFFFFFFFF
        rx = gwmp.Rxpk(tmst, FREQS[d % 3], "SF7BW125", build_join_request(JOIN_EUI, eui, 1, app_key),
                       -80, stat=1, lsnr=7.5, codr="4/5")
        token[0] = (token[0] + 1) & 0xFFFF
        fw = d % len(socks)
        pending[tmst] = (d, mono())
        socks[fw].sendto(gwmp.PushData(token[0], euis[fw], [rx]).encode(), addr)
        stats["requests"] += 1
    t_sent = mono()
    while pending and mono() - t_sent < timeout_s:
        drain()
        time.sleep(0.005)
    stats["seconds"] = mono() - t0
    lat.sort()
    stats["latency_ms"] = [x * 1000 for x in lat]
    return [joined[d] for d in sorted(joined)], stats


def loadgen(sender, sessions, args, port, ready, start_at, out_path, join_go=None):
    socks = []
    for _ in range(args.forwarders):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    join_stats = None
    if join_go is not None:  # sessions is [(DevEUI, AppKey)]: join them through the gateway first
        join_go.wait()
        sessions, join_stats = do_joins(sender, sessions, socks, port, args.join_rate / args.senders)
    dgrams = build_plan(sessions, args.per_sender, args.copies, args.rxpk, args.forwarders, sender)
    cpu_built = time.process_time()
    ready.set()
    while start_at.value == 0.0:
        time.sleep(0.001)
    t0 = start_at.value
    # uplinks per datagram (first copies only count) -> seconds between datagrams at this rate
    per_uplink = args.senders / args.rate
    sent_times = []
    acks = 0
    uplinks = 0
    mono = time.monotonic
    for fw, data, ids in dgrams:
        due = t0 + uplinks * per_uplink
        now = mono()
        if due > now:  # sleep, never spin: the load generator must not eat the gateway's CPU
            time.sleep(due - now)
        t = mono()
        socks[fw].sendto(data, ("127.0.0.1", port))
        uplinks += len(ids)
        for key in ids:
            sent_times.append((key[0], key[1], t))
        for s in socks:  # drain PUSH_ACKs (they tell us the gateway is reading)
            try:
                while True:
                    s.recv(64)
                    acks += 1
            except BlockingIOError:
                pass
    t_end = mono()
    cpu_sending = time.process_time() - cpu_built
    deadline = t_end + 2.0
    while mono() < deadline:
        got = False
        for s in socks:
            try:
                while True:
                    s.recv(64)
                    acks += 1
                    got = True
            except BlockingIOError:
                pass
        if not got:
            time.sleep(0.05)
    with open(out_path, "w") as f:
        json.dump({"sent": sent_times, "datagrams": len(dgrams), "acks": acks, "cpu_s": cpu_sending,
                   "joins": join_stats,
                   "t_first": sent_times[0][2] if sent_times else t0, "t_last": t_end}, f)


# ---- subscriber (its own process) -------------------------------------------------------------

def subscriber(mqtt_port, topic, ready, stop, delivered, out_path):
    import cbor2
    import paho.mqtt.client as mqtt

    arrivals = []  # (monotonic arrival, payload)

    def on_connect(client, userdata, flags, rc, props):
        client.subscribe(topic, qos=1)

    def on_subscribe(client, userdata, mid, rcs, props):
        ready.set()

    def on_message(client, userdata, msg):
        arrivals.append((time.monotonic(), msg.payload))

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub", clean_session=True)
    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    c.connect("127.0.0.1", mqtt_port, keepalive=60)
    c.loop_start()
    seen: dict[tuple[str, int], list[float]] = {}
    foreign = 0
    done = 0
    while not stop.is_set():
        time.sleep(0.2)
        n = len(arrivals)
        for t, p in arrivals[done:n]:
            batch = cbor2.loads(p)
            for rec in batch[4]:
                bn = rec.get(SENML_BN, rec.get("bn"))
                if bn is None:
                    continue
                lora = rec.get("lora") or {}
                fcnt = lora.get("fcnt")
                if not isinstance(bn, str) or fcnt is None:
                    foreign += 1
                    continue
                eui = bn.split(":")[3]
                seen.setdefault((eui, fcnt), []).append(t)
        done = n
        delivered.value = len(seen)
    c.loop_stop()
    c.disconnect()
    with open(out_path, "w") as f:
        json.dump({"seen": [[k[0], k[1], v] for k, v in seen.items()], "batches": len(arrivals),
                   "unidentified": foreign}, f)


# ---- stand-in gateway process (until `python -m gateway run` exists) --------------------------

def serve_standin(config_path: str, ready_file: str, batched: bool, sync: str,
                  linger_s: float = 0.0, rcvbuf: int = 0, cipher_cache: int = 0) -> None:
    """ForwarderServer + RecordQueue + Publisher wired as app.py would, with the bench's config."""
    import asyncio
    import tomllib

    from gateway.lorawan.forwarders import ForwarderServer
    from gateway.backhaul.publisher import Publisher
    from gateway.lorawan.registry import load_registry
    from gateway.lorawan.sessions import SessionStore
    from gateway.backhaul.store import Record, RecordQueue
    from protocol import cbor
    from protocol.lorawan.region import EU868

    if cipher_cache:  # proposed protocol/cipher.py change: a cache that holds 2 keys per device
        import protocol.cipher
        protocol.cipher.CACHE_SIZE = cipher_cache
    with open(config_path, "rb") as f:
        cfg = tomllib.load(f)
    g = cfg["gateway"]
    data_dir = g["data_dir"]
    reg = load_registry(os.path.join(os.path.dirname(config_path), g["registry"]))
    sessions = SessionStore.for_net_id(os.path.join(data_dir, "sessions.db"), g["net_id"],
                                       synchronous=sync)
    queue = RecordQueue(os.path.join(data_dir, "queue.db"), synchronous=sync)
    m = cfg["mqtt"]
    host, port = m["url"].split("//")[1].split(":")
    pub = Publisher(queue, gateway_id=g["id"], site=g["site"], host=host, port=int(port),
                    topic_prefix=m["topic_prefix"], max_batch_bytes=m["max_batch_bytes"],
                    max_batch_records=m["max_batch_records"], max_batch_age_s=m["max_batch_age_s"])

    def encode(r) -> Record:
        first = dict(r.records[0])
        first["lora"] = {"fcnt": r.fcnt, "fport": r.fport, "copies": r.copies}
        recs = [first] + r.records[1:]
        labels = {"bver": -1, "bn": -2, "bt": -3, "n": 0, "u": 1, "v": 2, "vs": 3, "vb": 4}
        return Record(cbor.dumps([{labels.get(k, k): v for k, v in rec.items()} for rec in recs]),
                      "lorawan")

    def on_records(r) -> None:  # naive: one durable put per uplink
        queue.put([encode(r)])
        pub.notify()

    class BatchedServer(ForwarderServer):
        """Release loop that group-commits: process_batch (one session commit) + one put."""

        async def _release_loop(self) -> None:
            while True:
                deadline = self.dedup.next_deadline()
                if deadline is not None:
                    deadline += linger_s  # let more groups fall due: bigger group commits
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                self._wake.clear()
                if timeout is None or timeout > 0:
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    except asyncio.TimeoutError:
                        pass
                ups = self.dedup.due(time.monotonic())
                if ups:
                    t0 = time.perf_counter()
                    self._inc("uplinks", len(ups))
                    results = self.processor.process_batch(ups, time.time())
                    t1 = time.perf_counter()
                    good = []
                    for up, r in zip(ups, results):
                        if r.kind == "join":
                            self._join(up)
                        elif not r.accepted:
                            self._inc("uplink-%s" % r.reason)
                        else:
                            good.append(r)
                    if good:
                        self._inc("records", len(good))
                        items = [encode(r) for r in good]
                        t2 = time.perf_counter()
                        queue.put(items)
                        pub.notify()
                        t3 = time.perf_counter()
                        timing.append((len(ups), t1 - t0, t2 - t1, t3 - t2))
                await asyncio.sleep(0)

    timing: list[tuple] = []  # (uplinks, process_batch s, encode s, put s) per release
    lags: list[float] = []

    async def lag_monitor() -> None:  # how late the event loop runs a 5 ms timer
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - t - 0.005)

    def summary() -> dict:
        out = {}
        if timing:
            for i, name in ((0, "release_size"), (1, "process_batch_ms"), (2, "encode_ms"), (3, "put_ms")):
                v = sorted(x[i] * (1 if i == 0 else 1000) for x in timing)
                out[name] = {"p50": round(v[len(v) // 2], 2), "p99": round(v[int(len(v) * .99)], 2),
                             "max": round(v[-1], 2)}
        if lags:
            v = sorted(lags)
            out["loop_lag_ms"] = {"p50": round(v[len(v) // 2] * 1000, 2),
                                  "p99": round(v[int(len(v) * .99)] * 1000, 2), "max": round(v[-1] * 1000, 2)}
        return out

    async def main() -> None:
        asyncio.get_running_loop().create_task(lag_monitor())
        cls = BatchedServer if batched else ForwarderServer
        srv = cls(reg, sessions, EU868, g["net_id"], on_records, host=cfg["udp"]["host"],
                  port=cfg["udp"]["port"], dedup_window_s=cfg["dedup"]["window_ms"] / 1000)
        await srv.start()
        if rcvbuf:
            srv._transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        pub.start()
        tmp = ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"udp_host": srv.host, "udp_port": srv.port, "pid": os.getpid()}, f)
        os.replace(tmp, ready_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 2.0)
            except asyncio.TimeoutError:
                pass
            with open(os.path.join(data_dir, "stats.json"), "w") as f:
                json.dump({"timing": summary(), "forwarders": srv.counters, "uplink": srv.processor.counters,
                           "publisher": pub.counters}, f)
        await srv.stop()

    try:
        asyncio.run(main())
    finally:
        pub.stop()
        queue.close()
        sessions.close()


# ---- orchestration ----------------------------------------------------------------------------

def rss_kb(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    k, v = line.split(":")
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by a process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat, all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    tck = os.sysconf("SC_CLK_TCK")
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v) - idle) / tck, sum(v) / tck


def queued(data_dir: str) -> int | None:
    """Records waiting in the gateway's durable queue, from its stats.json (None if unknown)."""
    try:
        with open(os.path.join(data_dir, "stats.json")) as f:
            return json.load(f)["queue"]["records"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_bytes(pid: int) -> int:
    """Bytes the process caused to be written to storage (/proc/<pid>/io)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def udp_drops(port: int) -> int | None:
    """Datagrams the kernel dropped on the gateway's UDP socket (receive buffer full)."""
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if int(parts[1].split(":")[1], 16) == port:
                    return int(parts[-1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(round(p / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[i]


def run(args) -> dict:
    from tests.gateway.mosquitto import Mosquitto

    root = os.path.abspath(args.gateway_root)
    use_real = args.gateway == "real" or (args.gateway == "auto" and real_gateway_available(root))
    tmp = tempfile.mkdtemp(prefix="gw-ingest-")
    data_dir = os.path.join(tmp, "data")
    os.makedirs(data_dir)
    t = time.monotonic()
    write_registry(os.path.join(tmp, "devices.toml"), args.devices)
    join_go = None
    if args.sessions == "join":
        sessions = [device(i) for i in range(args.devices)]
        join_go = mp.get_context("fork").Event()
        print("setup: %d devices registered; sessions: real joins through the gateway at %g/s"
              % (args.devices, args.join_rate), flush=True)
    else:
        sessions = populate_sessions(os.path.join(data_dir, "sessions.db"), args.devices)
        print("setup: %d devices registered, %d sessions pre-populated in %s (%.1f s)"
              % (args.devices, len(sessions), os.path.join(data_dir, "sessions.db"),
                 time.monotonic() - t), flush=True)

    ctx = mp.get_context("fork")
    udp_port = free_udp_port()
    start_at = ctx.Value("d", 0.0)
    senders = []
    t = time.monotonic()
    for s in range(args.senders):
        ready = ctx.Event()
        part = sessions[s::args.senders]  # disjoint devices per sender: FCnt order is kept
        out = os.path.join(tmp, "sent-%d.json" % s)
        p = ctx.Process(target=loadgen, args=(s, part, args, udp_port, ready, start_at, out, join_go))
        p.start()
        senders.append((p, ready, out))

    broker = Mosquitto(tmp).start()
    config = os.path.join(tmp, "gateway.toml")
    write_config(config, data_dir, udp_port, broker.port, args)
    topic = "streetgrid/%s/%s/readings" % (SITE, GATEWAY_ID)
    sub_ready, sub_stop, delivered = ctx.Event(), ctx.Event(), ctx.Value("i", 0)
    sub_out = os.path.join(tmp, "received.json")
    sub = ctx.Process(target=subscriber, args=(broker.port, topic, sub_ready, sub_stop, delivered, sub_out))
    sub.start()

    ready_file = os.path.join(tmp, "ready.json")
    if use_real:
        cmd = [sys.executable, "-m", "gateway", "run", "--config", config, "--ready-file", ready_file]
        kind = "real gateway (python -m gateway run)"
    else:
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", config, ready_file,
               "--sync", args.sync, "--standin-linger-ms", str(args.standin_linger_ms),
               "--standin-rcvbuf", str(args.standin_rcvbuf),
               "--standin-cipher-cache", str(args.standin_cipher_cache)] + (
                   ["--standin-batch"] if args.standin_batch else [])
        kind = "stand-in (ForwarderServer + RecordQueue + Publisher, %s, synchronous=%s)" % (
            "batched release: process_batch + one put, linger %d ms" % args.standin_linger_ms
            if args.standin_batch else "one put per uplink", args.sync) + ", SO_RCVBUF %s, cipher cache %s" % (
                args.standin_rcvbuf or "default", args.standin_cipher_cache or "default")
    gw_log = open(os.path.join(tmp, "gateway.log"), "w")
    env = dict(os.environ, GATEWAY_ROOT=root, PYTHONPATH=root)
    gw = subprocess.Popen(cmd, cwd=root, stdout=gw_log, stderr=subprocess.STDOUT, env=env)
    if root != ROOT:
        kind += " from %s" % root
    result = {}
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(ready_file):
            if gw.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("gateway did not become ready; log: %s\n%s" % (
                    gw_log.name, open(gw_log.name).read()[-3000:]))
            time.sleep(0.05)
        info = json.load(open(ready_file))
        pid = info.get("pid", gw.pid)
        port = info.get("udp_port", udp_port)
        if port != udp_port:
            raise SystemExit("gateway serves UDP on %s, configured %s" % (port, udp_port))
        if join_go is not None:
            join_go.set()
        for p, ready, _ in senders:
            ready.wait(900)
        sub_ready.wait(10)
        print("load: %d uplinks built in %.1f s by %d sender process(es); gateway: %s, pid %d"
              % (args.per_sender * args.senders, time.monotonic() - t, args.senders, kind, pid), flush=True)
        rss_idle = rss_kb(pid)
        cpu0 = {"gateway": cpu_s(pid), "mosquitto": cpu_s(broker.proc.pid), "subscriber": cpu_s(sub.pid)}
        wall0 = time.monotonic()
        io0 = write_bytes(pid)
        cpu = None
        start_at.value = time.monotonic() + 0.2
        peak_rss = 0
        total = args.per_sender * args.senders
        last_n, last_change = -1, time.monotonic()
        samples = []  # (monotonic, gateway CPU s, machine busy s) once a second
        next_sample = start_at.value
        while True:
            time.sleep(0.25)
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic(), cpu_s(pid), machine_busy()[0], queued(data_dir)))
                next_sample += 1.0
            r = rss_kb(pid)
            peak_rss = max(peak_rss, r.get("VmRSS", 0))
            n = delivered.value
            now = time.monotonic()
            if n != last_n:
                last_n, last_change = n, now
            sending = any(p.is_alive() for p, _, _ in senders)
            if not sending and cpu is None:  # CPU while the load ran (drain/idle time excluded)
                wall = time.monotonic() - wall0
                cpu = {"gateway": cpu_s(pid), "mosquitto": cpu_s(broker.proc.pid), "subscriber": cpu_s(sub.pid)}
                cpu = {k: (v - cpu0[k]) / wall for k, v in cpu.items()}
            if not sending and (n >= total or now - last_change > args.drain):
                break
            if gw.poll() is not None:
                print("gateway exited with %s during the run" % gw.returncode)
                break
        final_rss = rss_kb(pid)
        gw_cpu_total = cpu_s(pid) - cpu0["gateway"]  # the whole run, drain included
        gw_written = write_bytes(pid) - io0
        load_avg = os.getloadavg()
        drops = udp_drops(udp_port)
        sub_stop.set()
        sub.join(60)
        for p, _, _ in senders:
            p.join(10)
        stats_path = os.path.join(data_dir, "stats.json")
        gw_stats = json.load(open(stats_path)) if os.path.exists(stats_path) else None
    finally:
        if gw.poll() is None:
            gw.send_signal(signal.SIGTERM)
            try:
                gw.wait(20)
            except subprocess.TimeoutExpired:
                gw.kill()
                gw.wait()
        gw_log.close()
        broker.stop()

    sent = {}
    acks = datagrams = 0
    gen_cpu = 0.0
    joins = {"requests": 0, "accepts": 0, "rx2": 0, "bad": 0, "seconds": 0.0, "latency_ms": []}
    t_first, t_last = float("inf"), 0.0
    for _, _, out in senders:
        d = json.load(open(out))
        for eui, fc, ts in d["sent"]:
            sent[(eui, fc)] = ts
        acks += d["acks"]
        gen_cpu += d["cpu_s"]
        for k, v in (d.get("joins") or {}).items():
            joins[k] = max(joins[k], v) if k == "seconds" else joins[k] + v
        datagrams += d["datagrams"]
        t_first, t_last = min(t_first, d["t_first"]), max(t_last, d["t_last"])
    recv = json.load(open(sub_out))
    lat = []
    dups = 0
    unknown = 0
    last_arrival = 0.0
    in_window = 0  # delivered in the steady window: from w0 until the last send
    w0 = t_first + min(args.warmup, (t_last - t_first) / 2)
    for eui, fc, times in recv["seen"]:
        ts = sent.get((eui, fc))
        if ts is None:
            unknown += 1
            continue
        dups += len(times) - 1
        lat.append(times[0] - ts)
        last_arrival = max(last_arrival, times[0])
        in_window += w0 <= times[0] <= t_last
    # per second of the run: uplinks sent, lost, latency p50/p99 (where trouble starts)
    delivered_at = {(eui, fc): times[0] for eui, fc, times in recv["seen"]}
    secs: dict[int, list] = {}
    for key, ts in sent.items():
        b = secs.setdefault(int(ts - t_first), [0, 0, []])
        b[0] += 1
        arr = delivered_at.get(key)
        if arr is None:
            b[1] += 1
        else:
            b[2].append(arr - ts)
    timeline = []
    for sec in sorted(secs):
        n, lost, ls = secs[sec]
        ls.sort()
        # cores used in that second: by the gateway, by everything on the machine
        a = next((x for x in samples if x[0] >= t_first + sec), None)
        b = next((x for x in samples if x[0] >= t_first + sec + 1), None)
        gw_c, all_c = ((b[1] - a[1]) / (b[0] - a[0]), (b[2] - a[2]) / (b[0] - a[0])) if a and b else (
            float("nan"), float("nan"))
        timeline.append((sec, n, lost, pct(ls, 50) * 1000, pct(ls, 99) * 1000, gw_c, all_c,
                         -1 if b is None or b[3] is None else b[3]))
    warm = [t[2][0] - sent[(t[0], t[1])] for t in recv["seen"]
            if (t[0], t[1]) in sent and sent[(t[0], t[1])] - t_first >= args.warmup]
    warm.sort()
    lat.sort()
    cpu = dict(cpu or {}, **{"load generator": gen_cpu / max(1e-9, t_last - t_first)})
    got = len(lat)
    result = {
        "gateway": kind, "pid": pid, "devices": args.devices,
        "sessions": ("pre-populated (SessionStore.save_join)" if args.sessions == "prepopulate" else
                     "%d real joins through the gateway" % joins["accepts"]),
        "joins": None if args.sessions == "prepopulate" else dict(
            joins, latency_ms=None, p50_ms=pct(sorted(joins["latency_ms"]), 50),
            p99_ms=pct(sorted(joins["latency_ms"]), 99), max_ms=max(joins["latency_ms"], default=float("nan"))),
        "rate": args.rate, "seconds": args.seconds, "join_rate": args.join_rate, "rxpk_per_datagram": args.rxpk, "copies": args.copies,
        "senders": args.senders, "forwarders": args.forwarders * args.senders, "datagrams": datagrams,
        "push_acks": acks, "sent": len(sent), "delivered": got, "lost": len(sent) - got,
        "duplicates": dups, "udp_drops": drops, "cpu_cores": cpu, "cores": os.cpu_count(),
        "gateway_cpu_us_per_uplink": gw_cpu_total / max(1, got) * 1e6,
        "gateway_written_bytes_per_uplink": gw_written / max(1, got), "loadavg": load_avg, "unidentified": unknown + recv["unidentified"], "batches": recv["batches"],
        "offered_per_s": len(sent) / max(1e-9, t_last - t_first),
        "sustained_per_s": in_window / max(1e-9, t_last - w0), "window_start_s": w0 - t_first,
        "drain_s": max(0.0, last_arrival - t_last),
        "delivered_per_s": got / max(1e-9, last_arrival - t_first) if got else 0.0,
        "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000,
        "max_ms": (lat[-1] * 1000 if lat else float("nan")), "warmup_s": args.warmup,
        "steady_p50_ms": pct(warm, 50) * 1000, "steady_p99_ms": pct(warm, 99) * 1000,
        "steady_max_ms": (warm[-1] * 1000 if warm else float("nan")),
        "rss_idle_kb": rss_idle.get("VmRSS"), "rss_peak_sampled_kb": peak_rss,
        "vmhwm_kb": final_rss.get("VmHWM"), "gateway_stats": gw_stats, "tmp": tmp,
        "timeline": timeline,
    }
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def report(r: dict) -> None:
    print()
    print("gateway ingest: %s" % r["gateway"])
    print("  settings: %d devices (%s), offered %d uplinks/s for %d s, %d rxpk per PUSH_DATA, "
          "%d cop%s per uplink, %d sender process(es), %d forwarder sockets"
          % (r["devices"], r["sessions"], r["rate"], r["seconds"], r["rxpk_per_datagram"], r["copies"],
             "y" if r["copies"] == 1 else "ies", r["senders"], r["forwarders"]))
    j = r.get("joins")
    if j:
        print("  joins     %d join-requests at up to %g/s, %d accepted (%d in RX2) in %.1f s; "
              "join-request sent -> join-accept PULL_RESP received: p50 %.1f ms, p99 %.1f ms, max "
              "%.1f ms (RX1 opens 5 s after the request); %d unmatched/bad answers"
              % (j["requests"], r["join_rate"], j["accepts"], j["rx2"], j["seconds"], j["p50_ms"],
                 j["p99_ms"], j["max_ms"], j["bad"]))
    print("  sent      %d uplinks in %d datagrams (%d PUSH_ACKs back), achieved offer %.0f uplinks/s"
          % (r["sent"], r["datagrams"], r["push_acks"], r["offered_per_s"]))
    print("  delivered %d uplinks in %d MQTT batches; sustained %.0f uplinks/s end to end (arrivals "
          "at the subscriber from %.1f s after the first send until the last send; goal >= 5,000); "
          "all of them: %.0f uplinks/s, the last %.2f s after the last send"
          % (r["delivered"], r["batches"], r["sustained_per_s"], r["window_start_s"], r["delivered_per_s"],
             r["drain_s"]))
    print("  latency   p50 %.1f ms, p99 %.1f ms, max %.1f ms (goal p99 < 500 ms); uplinks sent after "
          "the first %g s: p50 %.1f ms, p99 %.1f ms, max %.1f ms"
          % (r["p50_ms"], r["p99_ms"], r["max_ms"], r["warmup_s"], r["steady_p50_ms"],
             r["steady_p99_ms"], r["steady_max_ms"]))
    print("  lost      %d, duplicates %d, unidentified records %d (goal 0 lost); datagrams the "
          "kernel dropped at the gateway's UDP socket (receive buffer full): %s"
          % (r["lost"], r["duplicates"], r["unidentified"], r["udp_drops"]))
    print("  gateway RSS: idle %s kB, peak sampled %s kB, VmHWM %s kB; storage written %.0f bytes "
          "per uplink" % (r["rss_idle_kb"], r["rss_peak_sampled_kb"], r["vmhwm_kb"],
                          r["gateway_written_bytes_per_uplink"]))
    print("  CPU while sending (cores busy on average, of %d): %s; gateway CPU per delivered "
          "uplink %.0f us; load average at the end %.2f %.2f %.2f (other work on this machine "
          "competes for the same cores)" % (
              r["cores"], ", ".join("%s %.2f" % kv for kv in r["cpu_cores"].items()),
              r["gateway_cpu_us_per_uplink"], *r["loadavg"]))
    print("  per second of sending (s: sent/lost p50/p99 ms, cores used by the gateway/by the whole "
          "machine, records in the durable queue): " + "; ".join(
              "%d: %d/%d %.0f/%.0f %.2f/%.2f q%d" % t for t in r["timeline"]))
    st = r.get("gateway_stats")
    if st:
        print("  gateway counters: %s" % json.dumps(st, sort_keys=True)[:1200])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=5000, help="offered uplinks/s (all senders)")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--rxpk", type=int, default=8, help="frames per PUSH_DATA datagram")
    ap.add_argument("--copies", type=int, default=1, help="forwarders hearing each uplink")
    ap.add_argument("--senders", type=int, default=1, help="load generator processes")
    ap.add_argument("--forwarders", type=int, default=4, help="forwarder sockets per sender")
    ap.add_argument("--gateway", choices=("auto", "real", "standin"), default="auto")
    ap.add_argument("--sessions", choices=("prepopulate", "join"), default="prepopulate",
                    help="pre-populate the session store, or join every device through the gateway")
    ap.add_argument("--join-rate", type=float, default=500, help="join-requests per second (all senders)")
    ap.add_argument("--gateway-root", default=ROOT,
                    help="source tree the gateway process runs from (e.g. an exported older commit)")
    ap.add_argument("--standin-batch", action="store_true",
                    help="stand-in releases each dedup batch via process_batch + one put")
    ap.add_argument("--standin-linger-ms", type=int, default=0,
                    help="batched stand-in: release dedup groups this much after they fall due")
    ap.add_argument("--standin-rcvbuf", type=int, default=0, help="stand-in UDP SO_RCVBUF (0: OS default)")
    ap.add_argument("--standin-cipher-cache", type=int, default=0,
                    help="stand-in: protocol.cipher.CACHE_SIZE (0: as shipped)")
    ap.add_argument("--sync", default="FULL", help="stand-in SQLite synchronous (FULL/NORMAL)")
    ap.add_argument("--dedup-ms", type=int, default=200)
    ap.add_argument("--batch-bytes", type=int, default=16384)
    ap.add_argument("--batch-records", type=int, default=500)
    ap.add_argument("--batch-age", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=5.0,
                    help="also report latency of the uplinks sent after this many seconds")
    ap.add_argument("--drain", type=float, default=15.0, help="stop after this long without progress")
    ap.add_argument("--json", action="store_true", help="also print the result as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--serve", nargs=2, metavar=("CONFIG", "READY"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve_standin(args.serve[0], args.serve[1], args.standin_batch, args.sync,
                      args.standin_linger_ms / 1000, args.standin_rcvbuf, args.standin_cipher_cache)
        return
    args.per_sender = int(args.rate * args.seconds) // args.senders
    r = run(args)
    report(r)
    if args.json:
        print(json.dumps(r, default=str))


if __name__ == "__main__":
    main()
