"""Delta updates, device side (memu_ota.delta), against a real HTTP server on loopback (aiohttp
serving the channel with byte ranges) and real gpg signatures: what is fetched, that a broken
connection resumes, and that every kind of bad channel is refused with nothing left behind."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from ota_fixtures import Server, publish, shipped_templates, source_pattern, source_patterns

from memu_common import MemuError
from memu_ota import definitions, delta
from memu_ota.blockindex import BLOCK, BlockIndex

NAME = "memu-os_0.2.0_x86-64.usr.0123.img"
INDEX = delta.index_name(NAME)


def _blocks(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n * BLOCK)


@pytest.fixture
def channel(tmp_path: Path, keys: dict[str, Path]) -> Iterator[tuple[Server, Path, bytes]]:
    """A served channel whose artifact is the running slot (``old``, 64 blocks) with 3 blocks
    changed and 8 added; yields (server, the old slot's path, the new artifact)."""
    old = _blocks(1, 64)
    new = bytearray(old + _blocks(2, 8))
    for i in (5, 6, 40):
        new[i * BLOCK:(i + 1) * BLOCK] = _blocks(100 + i, 1)
    slot = tmp_path / "slot"
    slot.write_bytes(old)
    root = tmp_path / "channel"
    new_index = BlockIndex.of_file(_write(tmp_path / "new", bytes(new))).to_bytes()
    publish(root, {NAME: bytes(new), INDEX: new_index}, keys["release"])
    with Server(root) as server:
        yield server, slot, bytes(new)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _rebuild(server: Server, slot: Path, dest: Path, keyring: Path, kind: str = "c",
             http: delta.Http | None = None) -> delta.Rebuilt:
    http = http or delta.Http(timeout=5, retries=2)
    url = f"{server.url}/{kind}/"
    sums = delta.signed_sums(http, url, keyring).sums
    return delta.rebuild_artifact(http, url, NAME, sums, [slot], delta.index_sources([slot]),
                                  dest)


def test_only_the_changed_blocks_are_fetched(channel: tuple[Server, Path, bytes],
                                             tmp_path: Path, keys: dict[str, Path]) -> None:
    server, slot, new = channel
    http = delta.Http(timeout=5)
    got = _rebuild(server, slot, tmp_path / "out", keys["keyring"], http=http)
    assert got.path.read_bytes() == new
    index_bytes = len((server.root / (INDEX)).read_bytes())
    # blocks 5-6, block 40 and the 8 new blocks at the end: 11 blocks in 3 ranges (their
    # gaps, 132 and 92 KiB, are wider than MERGE_GAP, so no known block is fetched)
    assert got.fetched == index_bytes + 11 * BLOCK
    assert got.local == len(new) - 11 * BLOCK
    sums_bytes = sum(len((server.root / n).read_bytes()) for n in ("SHA256SUMS", "SHA256SUMS.gpg"))
    assert http.received == got.fetched + sums_bytes
    assert not list((tmp_path / "out").glob("*.partial"))


def test_a_broken_connection_resumes_from_the_byte_it_reached(
        channel: tuple[Server, Path, bytes], tmp_path: Path, keys: dict[str, Path]) -> None:
    server, slot, new = channel
    got = _rebuild(server, slot, tmp_path / "out", keys["keyring"], kind="flaky")
    assert got.path.read_bytes() == new
    # sums, signature, index, then 3 ranges each broken once and asked again from the middle
    assert server.requests == 3 + 3 * 2


def test_a_rebuild_cut_short_keeps_its_blocks_for_the_next_try(
        channel: tuple[Server, Path, bytes], tmp_path: Path, keys: dict[str, Path]) -> None:
    server, slot, new = channel
    dest = tmp_path / "out"
    dest.mkdir()
    # what a power cut during the last range left: everything but the 8 blocks at the end
    (dest / (NAME + delta.PARTIAL_SUFFIX)).write_bytes(new[:64 * BLOCK])
    got = _rebuild(server, slot, dest, keys["keyring"])
    assert got.path.read_bytes() == new
    assert got.fetched == len((server.root / (INDEX)).read_bytes()) + 8 * BLOCK


def test_a_channel_signed_by_another_key_is_refused(
        channel: tuple[Server, Path, bytes], tmp_path: Path, keys: dict[str, Path]) -> None:
    server, slot, new = channel
    publish(server.root, {NAME: new}, keys["stranger"])
    with pytest.raises(MemuError, match="signature does not verify"):
        _rebuild(server, slot, tmp_path / "out", keys["keyring"])


def test_changed_sums_are_refused(channel: tuple[Server, Path, bytes], tmp_path: Path,
                                  keys: dict[str, Path]) -> None:
    server, slot, _ = channel
    sums = server.root / "SHA256SUMS"
    sums.write_text(sums.read_text().replace(sums.read_text()[:8], "00000000", 1))
    with pytest.raises(MemuError, match="signature does not verify"):
        _rebuild(server, slot, tmp_path / "out", keys["keyring"])


def test_served_bytes_that_differ_from_the_index_are_refused_and_nothing_is_installed(
        channel: tuple[Server, Path, bytes], tmp_path: Path, keys: dict[str, Path]) -> None:
    server, slot, new = channel
    damaged = bytearray(new)
    damaged[40 * BLOCK] ^= 0xFF  # a fetched block, after the release was signed
    (server.root / NAME).write_bytes(damaged)
    with pytest.raises(MemuError, match=r"block 40 .* does not match the index"):
        _rebuild(server, slot, tmp_path / "out", keys["keyring"])
    assert not (tmp_path / "out" / NAME).exists()


def test_an_index_that_is_not_the_signed_one_is_refused(
        channel: tuple[Server, Path, bytes], tmp_path: Path, keys: dict[str, Path]) -> None:
    server, slot, _ = channel
    (server.root / (INDEX)).write_bytes(BlockIndex.of_file(slot).to_bytes())
    with pytest.raises(MemuError, match="does not match the signed SHA256SUMS"):
        _rebuild(server, slot, tmp_path / "out", keys["keyring"])
    assert not (tmp_path / "out" / NAME).exists()


def test_a_server_that_ignores_ranges_gets_a_clear_error(
        channel: tuple[Server, Path, bytes], tmp_path: Path, keys: dict[str, Path]) -> None:
    server, slot, _ = channel
    with pytest.raises(MemuError, match="answered 200 to a byte range request") as e:
        _rebuild(server, slot, tmp_path / "out", keys["keyring"], kind="norange")
    assert "supports Range" in (e.value.hint or "")


def test_a_release_without_delta_material_says_so(
        channel: tuple[Server, Path, bytes], tmp_path: Path, keys: dict[str, Path]) -> None:
    server, slot, new = channel
    publish(server.root, {NAME: new}, keys["release"])
    with pytest.raises(MemuError, match="no delta material"):
        _rebuild(server, slot, tmp_path / "out", keys["keyring"])


def test_sums_lines_are_parsed_and_a_damaged_line_is_refused() -> None:
    digest = "ab" * 32
    assert delta.parse_sums(f"{digest}  a.raw\n{digest} *b.efi\n\n") == {
        "a.raw": digest, "b.efi": digest}
    with pytest.raises(MemuError, match="line 2"):
        delta.parse_sums(f"{digest}  a.raw\nnot a sum\n")


def test_a_version_becomes_a_local_channel_the_transfers_read(
        tmp_path: Path, keys: dict[str, Path]) -> None:
    stem = "memu-os_0.2.0_x86-64"
    slot, uki = _blocks(1, 64), _blocks(3, 10)
    old_slot, old_uki = _write(tmp_path / "slot", slot), _write(tmp_path / "uki", uki)
    files = {f"{stem}.usr.0123.img": slot[:60 * BLOCK] + _blocks(4, 2),
             f"{stem}.usr-verity.4567.img": _blocks(5, 2),
             f"{stem}.usr-verity-sig.89ab.img": b'{"rootHash": "00"}',
             f"{stem}.efi": uki[:9 * BLOCK] + b"new cmdline"}
    for name, data in list(files.items()):
        files[delta.index_name(name)] = BlockIndex.of_file(_write(tmp_path / name, data)
                                                           ).to_bytes()
        if name.endswith(".img"):
            files[name.replace(".img", ".raw.gz")] = b"what sysupdate fetches in full"
    files["memu-os_0.1.0_x86-64.efi"] = uki  # another version in the channel
    publish(tmp_path / "channel", files, keys["release"])
    dest = tmp_path / "var" / "delta"
    dest.mkdir(parents=True)
    (dest / "memu-os_0.1.9_x86-64.efi").write_bytes(b"an older try")
    with Server(tmp_path / "channel") as server:
        got = delta.prepare(delta.Http(timeout=5), f"{server.url}/c/", "0.2.0", "x86-64",
                            [old_slot, old_uki], dest, keys["keyring"])

    names = sorted(n for n in files if n.startswith(stem) and n.endswith((".img", ".efi")))
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [*names, "SHA256SUMS", "SHA256SUMS.gpg"])
    for name in names:
        assert (dest / name).read_bytes() == files[name]
    for signed in ("SHA256SUMS", "SHA256SUMS.gpg"):  # the channel's, for sysupdate to verify
        assert (dest / signed).read_bytes() == (tmp_path / "channel" / signed).read_bytes()
    assert got.size == sum(len(files[n]) for n in names)
    new_blocks = 2 + 2 + 1 + 1  # usr tail, verity, signature, the UKI's last block
    indexes = sum(len(files[delta.index_name(n)]) for n in names)
    assert got.fetched < indexes + new_blocks * BLOCK + 4096

    defs = definitions.render_local(shipped_templates(tmp_path / "templates"),
                                       tmp_path / "defs", dest)
    for transfer in defs:
        text = transfer.read_text()
        assert f"Path=file://{dest}/" in text and "Verify=yes" in text, transfer.name
    patterns = [source_pattern(m, "0.2.0") for m in source_patterns(tmp_path / "defs",
                                                                    "*.transfer")]
    for name in names:
        assert sum(bool(p.match(name)) for p in patterns) == 1, name


def test_a_channel_without_the_version_is_refused(channel: tuple[Server, Path, bytes],
                                                  tmp_path: Path, keys: dict[str, Path]) -> None:
    server, slot, _ = channel
    with pytest.raises(MemuError, match=r"offers no memu-os artifacts of 0\.3\.0"):
        delta.prepare(delta.Http(timeout=5), f"{server.url}/c/", "0.3.0", "x86-64", [slot],
                      tmp_path / "dest", keys["keyring"])


def test_the_running_slot_and_uki_are_the_sources(tmp_path: Path) -> None:
    roothash = "11" * 16 + "0123456789abcdef0123456789abcdef"
    cmdline = _write(tmp_path / "cmdline", f"quiet usrhash={roothash} rw\n".encode())
    dev = tmp_path / "dev"
    usr = dev / "dm-0"
    number = os.stat(tmp_path).st_dev  # /usr's device: here the file system of tmp_path
    uevent = tmp_path / f"sys/dev/block/{os.major(number)}:{os.minor(number)}/uevent"
    (uevent.parent / "dm").mkdir(parents=True)
    uevent.write_text("MAJOR=254\nMINOR=0\nDEVNAME=dm-0\nDEVTYPE=disk\n")
    verity = dev / "disk/by-partuuid/01234567-89ab-cdef-0123-456789abcdef"
    uki = tmp_path / "esp" / "memu-os_0.1.0.efi"
    for path in (usr, verity, uki):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = delta.running_sources(uki, usr=tmp_path, cmdline=cmdline, sysfs=tmp_path / "sys",
                                  dev=dev)
    assert found == [usr, verity, uki]
    assert delta.running_sources(uki.with_name("gone.efi"), usr=tmp_path,
                                 cmdline=tmp_path / "none", sysfs=tmp_path / "sys",
                                 dev=dev) == [usr]
    (uevent.parent / "dm").rmdir()  # /usr on a plain disk (a developer's machine): not read
    assert delta.running_sources(None, usr=tmp_path, cmdline=tmp_path / "none",
                                 sysfs=tmp_path / "sys", dev=dev) == []
