"""Which read-only a directory is on, from /proc/self/mountinfo (review s29 MEDIUM-1): a
read-only mount of a writable filesystem (a bind mount, a container's read-only root) is
the deployment's; a read-only superblock (remount,ro, errors=remount-ro) the moment's.
Before, every statvfs ST_RDONLY was the moment's, and ``-k`` passed a read-only bind."""

from __future__ import annotations

from pathlib import Path

from smartstack.mountinfo import covering, parse, read_only_mount_of_writable_fs

# (as this host shows them: an ext4 root, a read-only bind with an optional field, a
# tmpfs remounted read-only, a stacked read-only tmpfs, a point with a space in it)
SAMPLE = """\
23 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
70 23 254:0 /srv/etc /srv/etc ro,relatime shared:7 master:1 - ext4 /dev/vda rw,discard
71 23 0:41 / /srv/tm ro,relatime - tmpfs tmpfs ro,size=100k
72 23 254:0 /srv/over /srv/over ro,relatime - ext4 /dev/vda rw,discard
73 72 0:42 / /srv/over ro,relatime - tmpfs tmpfs ro
74 23 254:0 /srv/a\\040b /srv/a\\040b ro - ext4 /dev/vda rw
garbage line
75 23 0:43 / /srv/short rw
"""


def test_parse_reads_both_options_past_the_optional_fields() -> None:
    mounts = parse(SAMPLE)
    assert [m.point for m in mounts] == ["/", "/srv/etc", "/srv/tm", "/srv/over", "/srv/over",
                                         "/srv/a b"]  # fmt: skip
    assert (mounts[1].mount_read_only, mounts[1].super_read_only) == (True, False)
    assert (mounts[2].mount_read_only, mounts[2].super_read_only) == (True, True)


def test_the_longest_mount_point_covers_and_the_last_of_a_stack() -> None:
    mounts = parse(SAMPLE)
    assert covering(mounts, "/srv/etc/haproxy").point == "/srv/etc"  # type: ignore[union-attr]
    assert covering(mounts, "/srv/etcetera").point == "/"  # type: ignore[union-attr]
    assert covering(mounts, "/srv/over/x").super_read_only  # type: ignore[union-attr]


def test_only_a_read_only_mount_of_a_writable_fs_is_the_deployments(tmp_path: Path) -> None:
    def verdict(path: str) -> str | None:
        return read_only_mount_of_writable_fs(Path(path), SAMPLE)

    assert verdict("/srv/etc/haproxy") == "/srv/etc"
    assert verdict("/srv/a b/x") == "/srv/a b"
    assert verdict("/srv/tm") is None  # remounted read-only: the moment's state
    assert verdict("/srv/over") is None  # a read-only tmpfs stacked on a read-only bind
    assert verdict("/var") is None  # writable
    assert read_only_mount_of_writable_fs(tmp_path, "") is None  # nothing said: statvfs' verdict
