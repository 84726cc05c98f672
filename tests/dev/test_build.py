"""The build's own errors: a /usr too big for its slot is named in words, with what to do.
systemd-repart's wording was captured from a real run of the tools tree's repart (a 5.7M
erofs for a 4M partition: "Partition 0's contents (5.7M) don't fit in the partition (4M).");
the lines below carry the numbers of a /usr that outgrew slot A."""

from __future__ import annotations

from memu_dev.build import repart_dirs, slot_overflow

#: The tail of a `systemd-repart` run (systemd 257, mkosi's tools tree) whose erofs content
#: outgrew a fixed-size partition, renumbered for slot A's /usr.
REPART_TAIL = [
    "Formatting future partition 3.",
    "Preparing to populate erofs filesystem.",
    "Ready to populate erofs filesystem.",
    "/var/tmp/repart-dZOi1a successfully formatted as erofs (uuid 80a74b3d-36c0-464c-9611-"
    "7e9b3117f435, no label)",
    "Successfully formatted future partition 3.",
    "Syncing future partition 3 contents to disk.",
    "Partition 3's contents (2.3G) don't fit in the partition (2G).",
]


def test_usr_outgrowing_its_slot_is_named_with_what_to_do() -> None:
    error = slot_overflow(["‣ Generating disk image", *REPART_TAIL], repart_dirs("n100"))
    assert error is not None
    assert error.message == ("the OS does not fit its /usr slot: 2.3G of files for 2G "
                             "(repart/12-usr.conf)")
    assert error.hint and 'where = "store"' in error.hint and "SizeMaxBytes" in error.hint


def test_another_partition_is_named_and_other_failures_are_not_misread() -> None:
    error = slot_overflow(["Partition 0's contents (600M) don't fit in the partition (512M)."],
                          repart_dirs("n100"))
    assert error is not None and error.message.startswith("00-esp.conf: 600M")
    assert error.hint == "see repart-systemd-boot/00-esp.conf"
    assert slot_overflow(["E: Unable to locate package nope", "mkosi failed"],
                         repart_dirs("n100")) is None
