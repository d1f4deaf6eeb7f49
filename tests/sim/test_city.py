"""City: layout and coverage, registry file, the uplink log against what a GWMP server got,
determinism, fault hooks (stand-in firmware; the real one is in test_city_gateway.py)."""

import asyncio

import pytest

from gateway.lorawan.registry import load_registry
from protocol import gwmp
from sim.board import LocalBoard
from sim.city import City
from tests.sim.standin import StandInApp


def standin_factory(name, dev_eui, cfg, x, y):
    return LocalBoard(name, dev_eui, cfg, x=x, y=y, app_factory=StandInApp, strict=True)


class MiniServer(asyncio.DatagramProtocol):
    """The least a network server does over GWMP: ack everything, remember what came."""

    def __init__(self):
        self.rxpk = []  # (forwarder EUI hex, Rxpk)
        self.pulls = set()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        m = gwmp.decode(data)
        if isinstance(m, gwmp.PushData):
            self.transport.sendto(m.ack().encode(), addr)
            self.rxpk += [(m.gateway_eui.hex().upper(), r) for r in m.rxpk]
        elif isinstance(m, gwmp.PullData):
            self.pulls.add(m.gateway_eui.hex().upper())
            self.transport.sendto(m.ack().encode(), addr)


async def run_city(seed, virtual_s=120, **kw):
    server = MiniServer()
    tr, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: server, local_addr=("127.0.0.1", 0))
    city = City(9, 2, tr.get_extra_info("sockname"), seed=seed, speed=None,
                board_factory=standin_factory, boot_spread_s=10, grace_s=0.01, **kw)
    await city.run(virtual_s)
    await asyncio.sleep(0.05)
    await city.close()
    tr.close()
    return city, server


def test_layout_covers_every_pole_and_some_twice():
    city = City(20, 2, ("127.0.0.1", 9), seed=3, board_factory=standin_factory)
    cov = city.coverage()
    assert all(len(f) >= 1 for f in cov.values())
    assert sum(1 for f in cov.values() if len(f) >= 2) >= 3
    xs = sorted({b.x for b in city.boards})
    assert xs[1] - xs[0] == 25.0
    with pytest.raises(ValueError, match="out of range"):
        City(60, 1, ("127.0.0.1", 9), board_factory=standin_factory)


def test_registry_file_loads_in_the_gateway(tmp_path):
    city = City(5, 1, ("127.0.0.1", 9), seed=7, site="harbour", board_factory=standin_factory)
    reg = load_registry(city.write_registry(tmp_path / "devices.toml"))
    assert len(reg) == 5
    d = city.devices()[2]
    dev = reg[d["dev_eui"]]
    assert d["site"] == "harbour" and d["kind"] == "pole" and len(d["app_key"]) == 32
    assert dev.app_key == bytes.fromhex(d["app_key"]) and dev.name == d["name"] == "pole-0003"
    assert dev.join_eui == bytes.fromhex(d["join_eui"])
    assert len({x["app_key"] for x in city.devices()}) == 5
    assert city.boards[2].cfg["app_key"] == d["app_key"]


def test_every_uplink_in_the_log_reached_exactly_the_forwarders_it_names():
    city, server = asyncio.run(asyncio.wait_for(run_city(5), 60))
    assert server.pulls == {f.eui_hex for f in city.forwarders}
    ups = city.uplinks
    assert len(ups) >= 9 * 11  # every 10 s for ~110 s
    got = {}
    for fwd, r in server.rxpk:
        if r.stat == 1:
            got.setdefault(r.data, set()).add(fwd)
    for u in ups:
        assert got.get(u["phy"], set()) == set(u["received"]), u
        assert u["utc"].startswith("2026-01-01T00:0")
    assert sum(1 for u in ups if len(u["received"]) >= 2) > 0  # dedup material
    assert {r.tmst for _, r in server.rxpk if r.stat == 1} == {
        u["end_us"] % 2**32 for u in ups if u["received"]}
    assert {u["fcnt"] for u in ups if u["board"] == "pole-0001"} == set(range(len(
        [u for u in ups if u["board"] == "pole-0001"])))


def test_same_seed_same_city():
    a, _ = asyncio.run(asyncio.wait_for(run_city(11, 60), 60))
    b, _ = asyncio.run(asyncio.wait_for(run_city(11, 60), 60))
    c, _ = asyncio.run(asyncio.wait_for(run_city(12, 60), 60))
    def key(city):
        return [(u["board"], u["t_us"], u["phy"], sorted(u["received"])) for u in city.uplinks]
    assert key(a) == key(b)
    assert key(a) != key(c)
    assert a.world.log == b.world.log


def test_fault_hooks_act_at_their_virtual_instants():
    async def main():
        server = MiniServer()
        tr, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: server, local_addr=("127.0.0.1", 0))
        city = City(3, 1, tr.get_extra_info("sockname"), seed=2, speed=None,
                    board_factory=standin_factory, boot_spread_s=5, grace_s=0.01)
        city.power_cut(30, "pole-0002")
        city.door(40, "pole-0003", True)
        city.tilt(50, "pole-0001", 15.0)
        seen = []
        city.schedule(45, lambda c: seen.append(c.clock.now_us))
        await city.run(60)
        await city.close()
        tr.close()
        return city, seen

    city, seen = asyncio.run(asyncio.wait_for(main(), 60))
    assert seen == [45_000_000]
    p2 = city.by_name["pole-0002"]
    assert p2.counters["power_cuts"] == 1 and p2.counters["boots"] == 2
    assert p2.app.sent >= 3  # rebooted at 30 s: a new app counting from 0
    first_after_cut = min(u["t_us"] for u in city.uplinks
                          if u["board"] == "pole-0002" and u["t_us"] >= 30_000_000)
    # it boots again at once: its radio driver's boot (reset pulse, 6 ms before SPI, the
    # registers written at the fake SPI's clock) delays the first frame by a few ms only
    assert 30_007_000 <= first_after_cut <= 30_015_000
    assert city.by_name["pole-0003"].machine.Pin(27).value() == 1  # door open, pulled up
    assert city.by_name["pole-0001"].lis.tilt_deg == 15.0
    assert city.by_name["pole-0002"].lis.tilt_deg == 0.0
    tilt_log = [e for t, n, e in city.world.log if n == "pole-0001" and t == 50_000_000]
    assert tilt_log and tilt_log[0]["tilt_deg"] == 15.0


def test_the_firmware_judges_power_alarms_by_the_lamp_the_world_lights():
    from sim.world import World

    city = City(2, 1, ("127.0.0.1", 9), board_factory=standin_factory,
                world=World(seed=1, rated_w=150.0))
    assert [b.cfg["lamp_rated_w"] for b in city.boards] == [150, 150]
    assert city.world.lamp("pole-0001", {"dimmer_duty_u16": 65535, "relay": 1}, 0)[0] \
        == pytest.approx(150.0, rel=0.02)
    own = City(1, 1, ("127.0.0.1", 9), board_factory=standin_factory,
               world=World(seed=1), cfg={"lamp_rated_w": 90})
    assert own.boards[0].cfg["lamp_rated_w"] == 90
    assert own.world.lamp("pole-0001", {"dimmer_duty_u16": 65535, "relay": 1}, 0)[0] \
        == pytest.approx(90.0, rel=0.02)


def test_observers_see_every_poll_of_every_board_at_its_instant():
    seen = []

    async def main():
        server = MiniServer()
        tr, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: server, local_addr=("127.0.0.1", 0))
        city = City(3, 1, tr.get_extra_info("sockname"), seed=4, speed=None,
                    board_factory=standin_factory, boot_spread_s=5, grace_s=0.01)
        polls = {b.name: [] for b in city.boards}
        for b in city.boards:  # count the polls the air makes, under the observer
            def counting(now_ms, b=b, poll=b.poll):
                polls[b.name].append(now_ms)
                return poll(now_ms)
            b.poll = counting
        city.observers.append(lambda board, now_ms: seen.append(
            (board.name, now_ms, board.now_ms, board.app.sent if board.app else None)))
        await city.run(40)
        await city.close()
        tr.close()
        return city, polls

    city, polls = asyncio.run(asyncio.wait_for(main(), 60))
    for b in city.boards:
        mine = [(t, sent) for name, t, now, sent in seen if name == b.name]
        assert [t for t, _ in mine] == polls[b.name] and len(mine) >= 4
        # after the poll that sent: the stand-in's frame count is already the new one; the
        # frame starts in that poll, once the driver has written the chip's registers over SPI
        sends = [u["t_us"] // 1000 for u in city.uplinks if u["board"] == b.name]
        assert sends and all(any(t <= s <= t + 3 and n >= 1 for t, n in mine) for s in sends)
    assert all(t == now for _, t, now, _ in seen)


def test_barriers_mode_can_be_switched_between_phases():
    city = City(2, 1, ("127.0.0.1", 9), seed=1, board_factory=standin_factory,
                barriers="expected")
    assert city.barriers == "expected" == city.air.barriers
    city.barriers = "all"
    assert city.air.barriers == "all"
    with pytest.raises(ValueError, match="barriers"):
        city.barriers = "some"
    assert city.barriers == "all"
