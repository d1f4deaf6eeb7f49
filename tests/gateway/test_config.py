"""The gateway's TOML config: defaults, path resolution, URL parsing, every error at once."""

import os

import pytest
from hypothesis import given, strategies as st

from gateway.config import ConfigError, load_config, parse_config, parse_mqtt_url

MINIMAL = '''
[gateway]
id = "gw-1"
site = "block-a"
registry = "devices.toml"
'''


def write(tmp_path, text, name="gateway.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_minimal_config_gets_documented_defaults(tmp_path):
    c = load_config(write(tmp_path, MINIMAL))
    assert (c.gateway_id, c.site, c.region, c.net_id, c.time_source) == ("gw-1", "block-a", "EU868",
                                                                          0x13, "forwarder")
    assert c.registry == str(tmp_path / "devices.toml")
    assert c.data_dir == str(tmp_path / "var" / "gw-1")
    assert (c.udp_host, c.udp_port, c.dedup_window_s, c.rx1_margin_s) == ("127.0.0.1", 1700, 0.2, 0.2)
    assert c.udp_rcvbuf_bytes == 4 * 1024 * 1024
    assert (c.mqtt.host, c.mqtt.port, c.topic_prefix, c.client_id) == ("127.0.0.1", 1883, "streetgrid/",
                                                                       "streetgrid-gw-1")
    assert (c.max_batch_bytes, c.max_batch_records, c.max_batch_age_s) == (16384, 500, 1.0)
    assert (c.log_level, c.stats_interval_s) == ("INFO", 10.0)


def test_full_contract_config_and_relative_paths(tmp_path, monkeypatch):
    sub = tmp_path / "etc"
    sub.mkdir()
    p = write(sub, '''
[gateway]
id = "gw-2"
site = "harbour"
region = "KR920"
net_id = 0x000001
data_dir = "../var/gw-2"
registry = "/abs/devices.toml"
time_source = "gateway"
[udp]
host = "0.0.0.0"
port = 0
[dedup]
window_ms = 150
[downlink]
rx1_margin_ms = 50
[mqtt]
url = "mqtt://broker.local:11883"
topic_prefix = "city/"
max_batch_bytes = 4096
max_batch_records = 10
max_batch_age_s = 0.5
[queue]
max_bytes = 100000
backlog_records = 7
[log]
level = "debug"
stats_interval_s = 0.5
''')
    monkeypatch.chdir(tmp_path.parent)  # the working directory must not matter
    c = load_config(p)
    assert c.data_dir == str(tmp_path / "var" / "gw-2") and c.registry == "/abs/devices.toml"
    assert (c.region, c.net_id, c.time_source, c.udp_host, c.udp_port) == ("KR920", 1, "gateway",
                                                                           "0.0.0.0", 0)
    assert (c.dedup_window_s, c.rx1_margin_s) == (0.15, 0.05)
    assert (c.mqtt.host, c.mqtt.port, c.mqtt_url) == ("broker.local", 11883, "mqtt://broker.local:11883")
    assert (c.queue_max_bytes, c.backlog_records, c.log_level, c.stats_interval_s) == (100000, 7, "DEBUG", 0.5)


def test_every_error_is_reported_at_once(tmp_path):
    p = write(tmp_path, '''
[gateway]
id = "gw/1"
region = "US915"
net_id = 0x1000000
time_source = "gps"
colour = "red"
[udp]
port = 70000
[mqtt]
url = "http://x:1"
max_batch_records = 0
[log]
level = "LOUD"
[extra]
x = 1
''')
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    errs = ei.value.errors
    text = str(ei.value)
    assert str(p) in text
    for needle in ("[gateway] id = 'gw/1'", "missing key 'site'", "missing key 'registry'",
                   "region = 'US915'", "net_id = 16777216", "time_source = 'gps'",
                   "unknown key 'colour'", "[udp] port = 70000", "scheme must be 'mqtt'",
                   "max_batch_records = 0", "level = 'LOUD'", "unknown section [extra]"):
        assert any(needle in e for e in errs), (needle, errs)
    assert len(errs) == 12


def test_unreadable_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="TOML syntax error"):
        load_config(write(tmp_path, "[gateway\nid = 1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
        load_config(tmp_path / "bin.toml")
    with pytest.raises(ConfigError, match=r"\[udp\] must be a table"):
        parse_config({"gateway": {"id": "a", "site": "b", "registry": "r"}, "udp": 5})


@pytest.mark.parametrize("url,want", [("mqtt://127.0.0.1:1883", ("127.0.0.1", 1883)),
                                      ("mqtt://broker", ("broker", 1883)),
                                      ("mqtt://[::1]:2000/", ("::1", 2000))])
def test_mqtt_url(url, want):
    assert parse_mqtt_url(url) == want


@pytest.mark.parametrize("url", ["127.0.0.1:1883", "mqtts://h:1", "mqtt://", "mqtt://h:99999",
                                 "mqtt://u:p@h:1", "mqtt://h:1/topic", 1883])
def test_bad_mqtt_url(url):
    with pytest.raises(ValueError):
        parse_mqtt_url(url)


@given(st.dictionaries(st.sampled_from(["gateway", "udp", "mqtt", "log", "zzz"]),
                       st.dictionaries(st.text(max_size=8),
                                       st.one_of(st.integers(), st.text(max_size=8), st.floats(),
                                                 st.booleans(), st.lists(st.integers(), max_size=2)),
                                       max_size=4),
                       max_size=4))
def test_any_document_gives_config_or_config_error(doc):
    try:
        c = parse_config(doc, "/x/gateway.toml")
    except ConfigError as exc:
        assert exc.errors
    else:
        assert os.path.isabs(c.data_dir)


def test_operator_guide_example_is_a_valid_config_with_the_documented_defaults(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "docs", "operator-guide.md")) as f:
        doc = f.read()
    example = doc.split("```toml\n")[1].split("```")[0]
    documented = load_config(write(tmp_path, example))
    defaults = load_config(write(tmp_path, MINIMAL, "minimal.toml"))
    # the example spells out every default; only what the minimal file sets may differ
    for name in documented.__slots__:
        if name not in ("path", "data_dir", "registry"):
            assert getattr(documented, name) == getattr(defaults, name), name
    assert documented.data_dir == defaults.data_dir


def test_chirpstack_is_off_by_default_and_its_problems_are_reported_with_the_rest(tmp_path):
    assert load_config(write(tmp_path, MINIMAL)).chirpstack is None
    (tmp_path / "cs.password").write_text("s3cret\n")
    c = load_config(write(tmp_path, MINIMAL + '''
[chirpstack]
url = "mqtts://cs.example:8883"
application_id = "17c82e96-be03-4f38-aef3-f83d48582d97"
username = "gw"
password_file = "cs.password"
protocol = "5"
'''))
    assert (c.chirpstack.host, c.chirpstack.port, c.chirpstack.protocol) == ("cs.example", 8883, "5")
    assert c.chirpstack.password == "s3cret" and c.chirpstack_client_id == "streetgrid-gw-1-chirpstack"
    assert c.chirpstack_application == "17c82e96-be03-4f38-aef3-f83d48582d97"
    assert c.mqtt.port == 1883  # [mqtt] is a separate link
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, MINIMAL + '''
[chirpstack]
url = "http://cs.example"
application_id = "a/b"
password_file = "missing.password"
colour = "blue"
'''))
    text = str(e.value)
    assert "[chirpstack] unknown key 'colour'" in text
    assert "[chirpstack] application_id = 'a/b'" in text
    assert "[chirpstack] url" in text and "scheme must be" in text
