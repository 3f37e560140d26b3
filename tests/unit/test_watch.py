"""The pure parts of the file watcher (workcopy/watch.py): inotify records, event masks, the
token and the bounded reply a client believes."""

from __future__ import annotations

import struct

import orjson
import pytest

from dsg.workcopy import watch


def record(wd: int, mask: int, name: bytes = b"", pad: int = 0) -> bytes:
    raw = name + b"\0" * (pad or (16 - len(name) % 16 if name else 0))
    return struct.pack("iIII", wd, mask, 0, len(raw)) + raw


def test_events_are_parsed_with_their_padded_names() -> None:
    buf = record(1, watch.IN_CREATE | watch.IN_ISDIR, b"new") + record(-1, watch.IN_Q_OVERFLOW)
    buf += record(2, watch.IN_MODIFY, b"f" * 16, pad=16)
    assert watch.parse_events(buf) == [
        (1, watch.IN_CREATE | watch.IN_ISDIR, 0, b"new"),
        (-1, watch.IN_Q_OVERFLOW, 0, b""),
        (2, watch.IN_MODIFY, 0, b"f" * 16),
    ]
    assert watch.parse_events(b"") == []


@pytest.mark.parametrize("cut", [1, 15, 17, 20])
def test_a_cut_record_is_an_error(cut: int) -> None:
    buf = record(1, watch.IN_CREATE, b"name")
    with pytest.raises(ValueError, match="truncated"):
        watch.parse_events(buf[:cut])


def test_a_name_longer_than_the_buffer_is_an_error() -> None:
    buf = struct.pack("iIII", 1, watch.IN_CREATE, 0, 1 << 30) + b"x" * 32
    with pytest.raises(ValueError):
        watch.parse_events(buf)


def test_masks_are_described() -> None:
    assert watch.describe(watch.IN_CREATE | watch.IN_ISDIR) == ["IN_CREATE", "IN_ISDIR"]
    assert watch.describe(watch.IN_Q_OVERFLOW) == ["IN_Q_OVERFLOW"]
    assert watch.describe(0x10) == ["0x10"]  # IN_CLOSE_NOWRITE: not one we ask for


@pytest.mark.parametrize(
    ("mask", "name", "change"),
    [
        (watch.IN_MODIFY, b"f.csv", True),
        (watch.IN_ATTRIB, b"f.csv", True),
        (watch.IN_CLOSE_WRITE, b"f.csv", True),
        (watch.IN_CREATE | watch.IN_ISDIR, b"d", True),
        (watch.IN_DELETE, b"f.csv", True),
        (watch.IN_MOVED_FROM, b"f.csv", True),
        (watch.IN_MOVED_TO, b"f.csv", True),
        (watch.IN_MODIFY, b".f.csv.swp", False),  # the scan never looks at hidden names
        (watch.IN_CREATE | watch.IN_ISDIR, b".git", False),
        (0x10, b"f.csv", False),  # a read-only close
    ],
)
def test_what_counts_as_a_change(mask: int, name: bytes, change: bool) -> None:
    assert watch.is_change(mask, name) is change


ROOT = (0xFE00, 0x2202A6)
EPOCH = "0123456789abcdef" * 2


def reply(doc: object) -> bytes:
    return orjson.dumps(doc) + b"\n"


def test_a_good_token_is_taken() -> None:
    tok = watch.make_token(ROOT, EPOCH, 42)
    assert tok == f"fe00.2202a6.{EPOCH}.42"
    assert watch.token_of(watch.parse_reply(reply({"ok": True, "token": tok})), ROOT) == tok


@pytest.mark.parametrize(
    "doc",
    [
        {"ok": False, "token": watch.make_token(ROOT, EPOCH, 1)},  # unhealthy
        {"ok": True},
        {"ok": True, "token": None},
        {"ok": True, "token": 7},
        {"ok": True, "token": watch.make_token((1, 2), EPOCH, 1)},  # another tree's
        {"ok": True, "token": f"fe00.2202a6.{EPOCH}.1.extra"},
        {"ok": True, "token": f"fe00.2202a6.{'Z' * 32}.1"},
        {"ok": True, "token": "fe00.2202a6." + "a" * 300 + ".1"},
        {"ok": "yes", "token": watch.make_token(ROOT, EPOCH, 1)},
    ],
)
def test_a_bad_token_is_none(doc: dict) -> None:
    assert watch.token_of(watch.parse_reply(reply(doc)), ROOT) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b'{"ok": true}',  # no end of line: cut short
        b'{"ok": true}\n{"ok": true}\n',
        b"[1, 2]\n",
        b"\xff\xfe\n",
        b'{"ok": true, "pad": "' + b"x" * watch.MAX_REPLY + b'"}\n',
    ],
)
def test_a_bad_reply_is_none(data: bytes) -> None:
    assert watch.parse_reply(data) is None


MOUNTINFO = """\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
40 22 0:40 / /data rw,relatime shared:5 - nfs4 server:/export rw,vers=4.2
41 22 0:41 / /zfs rw shared:6 - fuse.zfs-fuse pool rw
"""


def test_the_filesystem_type_is_read_from_mountinfo(tmp_path, monkeypatch) -> None:
    import os

    st = os.stat(tmp_path)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    info = MOUNTINFO.replace("0:40", dev)
    assert watch.fs_type(tmp_path, info) == "nfs4"
    assert "nfs4" in watch.REMOTE_FS and "fuse.zfs-fuse" not in watch.REMOTE_FS
    assert watch.fs_type(tmp_path / "missing", info) is None
