"""smartstack.zk_multiread without a server: paths, request bytes and reply parsing."""

from __future__ import annotations

import pytest
from kazoo.exceptions import NoNodeError
from kazoo.protocol.paths import _prefix_root
from kazoo.protocol.serialization import (
    GetChildren,
    GetData,
    MultiHeader,
    int_struct,
    multiheader_struct,
    stat_struct,
    write_buffer,
    write_string,
)

from smartstack.zk_multiread import GET_CHILDREN, GET_DATA, MultiRead, full_path

PATHS = ["/a/b", "/", "/a//b", "/a/b/", "/a/./b", "/a/../b", "/a/.hid", "/a/b.c", "a/b", "/a/."]


@pytest.mark.parametrize("root", ["", "/", "/chroot", "chroot/"])
@pytest.mark.parametrize("path", PATHS)
def test_full_path_is_kazoos_prefix_root(root: str, path: str) -> None:
    try:
        expected = _prefix_root(root, path)
    except ValueError:
        with pytest.raises(ValueError):
            full_path(root, path)
    else:
        assert full_path(root, path) == expected


def test_a_multi_read_with_listings_serialises_each_op_by_its_kind() -> None:
    request = MultiRead(["/s", "/s/c"], False, [GET_CHILDREN, GET_DATA])
    assert request.serialize() == (
        MultiHeader(8, False, -1).serialize()
        + GetChildren("/s", False).serialize()
        + MultiHeader(4, False, -1).serialize()
        + GetData("/s/c", False).serialize()
        + multiheader_struct.pack(-1, True, -1)
    )
    assert MultiRead(["/s/é"], True).serialize() == (  # (the watch flag, a UTF-8 name)
        MultiHeader(4, False, -1).serialize()
        + GetData("/s/é", True).serialize()
        + multiheader_struct.pack(-1, True, -1)
    )
    assert MultiRead(["/s/c"], False).serialize() == (
        MultiHeader(4, False, -1).serialize()
        + GetData("/s/c", False).serialize()
        + multiheader_struct.pack(-1, True, -1)
    )


def test_a_reply_of_listings_data_and_errors_is_parsed_in_order() -> None:
    stat = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
    reply = (
        multiheader_struct.pack(8, False, 0)
        + int_struct.pack(2)
        + write_string("c1")
        + write_string("c2")
        + multiheader_struct.pack(4, False, 0)
        + write_buffer(b"data")
        + stat_struct.pack(*stat)
        + multiheader_struct.pack(-1, False, -101)
        + int_struct.pack(-101)  # NoNode: that op's error only
        + multiheader_struct.pack(8, False, 0)
        + int_struct.pack(0)
        + multiheader_struct.pack(4, False, 0)
        + write_buffer(None)  # a znode without data: length -1
        + stat_struct.pack(*stat)
        + multiheader_struct.pack(-1, True, -1)
    )
    names, (data, znode_stat), missing, empty, (null, _) = MultiRead.deserialize(bytes(reply), 0)
    assert names == ["c1", "c2"] and empty == [] and null is None
    assert data == b"data" and znode_stat.mzxid == 2
    assert isinstance(missing, NoNodeError)
