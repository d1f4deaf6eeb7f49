"""sim.nvs_file.NvsFile: a board's committed NVS survives the process on disk; what was not
committed does not; a file that is not an NVS file is an error, never an empty flash."""

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.board import load_fake
from sim.nvs_file import NvsFile, NvsFileError

_n = [0]


def esp32():
    _n[0] += 1
    return load_fake("esp32", "nvsfile%d" % _n[0])


def test_committed_values_come_back_uncommitted_do_not(tmp_path):
    path = str(tmp_path / "nvs.json")
    e = esp32()
    assert NvsFile(path).attach("a", e.FLASH) is False  # cold: nothing stored
    nvs = e.NVS("energy")
    nvs.set_blob("e0", b"\x01\x02")
    nvs.set_i32("n", -7)
    nvs.commit()
    nvs.set_i32("n", 99)  # never committed: a power cut (the process killed) loses it
    e2 = esp32()
    assert NvsFile(path).attach("a", e2.FLASH) is True
    nvs2 = e2.NVS("energy")
    assert nvs2.get_i32("n") == -7
    buf = bytearray(8)
    assert nvs2.get_blob("e0", buf) == 2 and bytes(buf[:2]) == b"\x01\x02"


def test_boards_are_kept_apart_and_unattached_ones_are_preserved(tmp_path):
    path = str(tmp_path / "nvs.json")
    a, b = esp32(), esp32()
    nf = NvsFile(path)
    nf.attach("a", a.FLASH)
    nf.attach("b", b.FLASH)
    na = a.NVS("x")
    na.set_i32("k", 1)
    na.commit()
    nb = b.NVS("x")
    nb.set_i32("k", 2)
    nb.commit()
    only_a = esp32()
    nf2 = NvsFile(path)
    assert nf2.names() == ["a", "b"]
    nf2.attach("a", only_a.FLASH)
    w = only_a.NVS("x")
    w.set_i32("k", 3)
    w.commit()  # rewrites the file: b must still be there
    c = esp32()
    NvsFile(path).attach("b", c.FLASH)
    assert c.NVS("x").get_i32("k") == 2
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # no temp files left


@pytest.mark.parametrize("text", ["{", "[]", '{"format": 2, "boards": {}}',
                                  '{"format": 1, "boards": {"a": {"ns": {"k": ["f32", 1]}}}}'])
def test_a_file_that_is_not_an_nvs_file_is_an_error(tmp_path, text):
    p = tmp_path / "nvs.json"
    p.write_text(text)
    with pytest.raises(NvsFileError, match="is not an NVS file"):
        NvsFile(str(p))


keys = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=15)
entries = st.one_of(st.tuples(st.just("i32"), st.integers(-(1 << 31), (1 << 31) - 1)),
                    st.tuples(st.just("blob"), st.binary(max_size=64)))


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(keys, st.dictionaries(keys, entries, max_size=5), max_size=4))
def test_any_flash_round_trips(tmp_path_factory, data):
    path = str(tmp_path_factory.mktemp("nvs") / "nvs.json")
    e = esp32()
    nf = NvsFile(path)
    nf.attach("m", e.FLASH)
    e.FLASH.data.update({ns: dict(k) for ns, k in data.items()})
    nf.save()
    json.loads(open(path).read())
    e2 = esp32()
    NvsFile(path).attach("m", e2.FLASH)
    assert e2.FLASH.data == data
