import string

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway.lorawan.registry import Registry, RegistryError, load_registry, parse_registry

KEY = "2B7E151628AED2A6ABF7158809CF4F3C"

GOOD = f'''
[[device]]
name = "pole-1"
site = "harbour"
kind = "pole"
dev_eui = "70B3D57ED0001234"
join_eui = "70:B3:D5:7E:D0:00:00:00"
app_key = "{KEY}"

[[device]]
name = "meter-1"
site = "harbour"
kind = "meter"
dev_eui = "70b3d57ed0005678"
join_eui = "70B3D57ED0000000"
app_key = "{KEY.lower()}"
dev_nonce = "random"
'''


def write(tmp_path, text, name="devices.toml"):
    p = tmp_path / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return p


def test_load_good(tmp_path):
    reg = load_registry(write(tmp_path, GOOD))
    assert len(reg) == 2
    d = reg.get(bytes.fromhex("70B3D57ED0001234"))
    assert d.name == "pole-1" and d.kind == "pole" and d.site == "harbour"
    assert d.join_eui == bytes.fromhex("70B3D57ED0000000")
    assert d.app_key == bytes.fromhex(KEY)
    assert d.dev_nonce_mode == "counter"
    assert reg["70b3d57ed0005678"].dev_nonce_mode == "random"
    assert reg.get(b"\x00" * 8) is None and reg.get("zz") is None
    assert bytes.fromhex("70B3D57ED0001234") in reg
    assert {x.name for x in reg} == {"pole-1", "meter-1"}


def test_keys_never_in_repr(tmp_path):
    reg = load_registry(write(tmp_path, GOOD))
    for d in reg:
        r = repr(d) + str(d)
        assert KEY.lower() not in r.lower()
        assert "app_key" not in r
    assert KEY.lower() not in repr(reg).lower()


def test_all_errors_listed_at_once(tmp_path):
    text = f'''
[[device]]
name = "ok"
site = "s"
kind = "pole"
dev_eui = "0000000000000001"
join_eui = "0000000000000000"
app_key = "{KEY}"

[[device]]
name = "badhex"
site = "s"
kind = "pole"
dev_eui = "00000000000000ZZ"
join_eui = "0000000000000000"
app_key = "{KEY}"

[[device]]
name = "shortkey"
site = "s"
kind = "pole"
dev_eui = "0000000000000002"
join_eui = "0000000000000000"
app_key = "{KEY[:-2]}"

[[device]]
name = "dup"
site = "s"
kind = "meter"
dev_eui = "00-00-00-00-00-00-00-01"
join_eui = "0000000000000000"
app_key = "{KEY}"

[[device]]
name = "kind"
site = "s"
kind = "lamp"
dev_eui = "0000000000000003"
join_eui = "0000000000000000"
app_key = "{KEY}"

[[device]]
site = "s"
kind = "meter"
dev_eui = "0000000000000004"
join_eui = "0000000000000000"
app_key = "{KEY}"
colour = "red"
'''
    p = write(tmp_path, text)
    with pytest.raises(RegistryError) as ei:
        load_registry(p)
    e = ei.value
    msg = str(e)
    assert str(p) in msg
    assert len(e.errors) == 6, e.errors
    joined = "\n".join(e.errors)
    assert "entry #1 ('badhex'): field 'dev_eui' is not valid hex" in joined
    assert "entry #2 ('shortkey'): field 'app_key' must be 16 bytes" in joined
    assert "entry #3 ('dup'): field 'dev_eui' duplicate DevEUI 0000000000000001" in joined
    assert "entry #4 ('kind'): field 'kind' is unknown kind 'lamp'" in joined
    assert "entry #5: missing field 'name'" in joined
    assert "entry #5: unknown field 'colour'" in joined
    # a bad key value is never echoed
    assert KEY[:-2].lower() not in msg.lower()
    # each error on its own line
    assert msg.count("\n") == 6


def test_wrong_types_and_shapes(tmp_path):
    with pytest.raises(RegistryError) as ei:
        load_registry(write(tmp_path, 'device = 3\nother = 1\n'))
    assert len(ei.value.errors) == 2
    with pytest.raises(RegistryError) as ei:
        load_registry(write(tmp_path, '[[device]]\nname = 5\nsite = ""\nkind = 1\ndev_eui = 7\n'
                                      'join_eui = []\napp_key = {}\n'))
    errs = "\n".join(ei.value.errors)
    for f in ("name", "site", "kind", "dev_eui", "join_eui", "app_key"):
        assert f"'{f}'" in errs


def test_file_level_errors(tmp_path):
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(tmp_path / "missing.toml")
    with pytest.raises(RegistryError, match="TOML syntax"):
        load_registry(write(tmp_path, "[[device]\n"))
    with pytest.raises(RegistryError, match="UTF-8"):
        load_registry(write(tmp_path, b"\xff\xfe["))
    with pytest.raises(RegistryError):
        load_registry(tmp_path)  # a directory


def test_empty_file_is_empty_registry(tmp_path):
    assert len(load_registry(write(tmp_path, ""))) == 0


_keys = st.sampled_from(["name", "site", "kind", "dev_eui", "join_eui", "app_key", "dev_nonce",
                         "x", "device"])
_vals = st.one_of(
    st.sampled_from(['"pole"', '"meter"', '"counter"', '"random"', f'"{KEY}"',
                     '"70B3D57ED0001234"', '"0000000000000000"', "1", "true", "[]", "{}",
                     '"zz"', '""', "1979-05-27", "3.5", '"\\u0000"']),
    st.text(max_size=20).map(lambda s: '"' + s.replace("\\", "").replace('"', "") + '"'),
    st.text(max_size=10),
)
_line = st.one_of(
    st.just("[[device]]"), st.just("[device]"), st.just("[x]"),
    st.tuples(_keys, _vals).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.text(alphabet=string.printable, max_size=30),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.lists(_line, max_size=25).map("\n".join), st.binary(max_size=200).map(bytes)))
def test_garbage_gives_registry_error_only(tmp_path, text):
    p = write(tmp_path, text, "fuzz.toml")
    try:
        reg = load_registry(p)
    except RegistryError as e:
        assert e.errors and str(p) in str(e)
    else:
        assert isinstance(reg, Registry)


@given(st.recursive(st.none() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=15))
def test_parse_registry_any_structure(data):
    try:
        parse_registry(data)
    except RegistryError:
        pass
