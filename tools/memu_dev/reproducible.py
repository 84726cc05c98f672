"""Are two builds of one commit bit-identical? ``just check-reproducible``.

    python -m memu_dev.reproducible [--board n100] [--keep DIR]

Builds the image, keeps its release artifacts (the ``/usr``, verity and verity-signature
partitions and the UKI), builds again from a clean cache (``mkosi -ff``: the cached base
tree and the tools tree are made anew; downloaded packages are reused, so the package set is
the same) and compares the two sets byte for byte. For an artifact that differs it says
where: the ``/usr`` trees (extracted from the erofs with ``fsck.erofs --extract``, from
mkosi's tools tree) and the UKI's PE sections (``objcopy --dump-section``) go to
``diffoscope`` (installed from Debian when first needed), never the 2 GiB partition images.
Exit status 0 when every artifact is identical but for the known differences
(:data:`KNOWN_UKI_DIFFERENCES`, each with its reason), 1 otherwise.

What makes the build reproducible lives in the image config: ``SourceDateEpoch=`` (file
times, erofs' superblock, the UKI's PE header) and ``Seed=`` (partition UUIDs and the verity
salt, which systemd-repart derives from it) in ``mkosi.conf``.
See https://reproducible-builds.org/docs/source-date-epoch/.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from memu_common import MemuError, boards, run
from memu_common.files import sha256_file
from memu_dev import build
from memu_dev.paths import DEFAULT_BOARD, OUTPUT, image_path, mkosi_cmd

log = logging.getLogger("memu.reproducible")

#: A split partition's name carries its partition UUID: ``….usr.<32 hex>.raw``.
_UUID = re.compile(r"\.[0-9a-f]{32}(?=\.raw$)")
#: The UKI's sections worth comparing one by one (systemd's UKI specification,
#: https://uapi-group.org/specifications/specs/unified_kernel_image/).
UKI_SECTIONS = (".linux", ".initrd", ".ucode", ".cmdline", ".osrel", ".uname", ".sbat",
                ".splash", ".dtb", ".pcrsig", ".pcrpkey", ".profile")

#: UKI sections known to differ between two builds, and why. Only these may differ for the
#: check to pass; the README's release checklist names them too.
KNOWN_UKI_DIFFERENCES = {
    "ucode": "mkosi 25.3 (Debian trixie's) writes the early microcode cpio with the build's "
             "file times in 4 of its headers; fixed in later mkosi (systemd/mkosi#4091)",
}
#: diffoscope's text report is cut at this size (a changed initrd alone can fill 400 MB).
REPORT_MAX_BYTES = 5_000_000


def role(name: str) -> str:
    """An artifact's name without its partition UUID: ``memu-os_0.1.0_x86-64.usr.raw``."""
    return _UUID.sub("", name)


def release_artifacts(output: Path, stem: str) -> dict[str, Path]:
    """The artifacts a release publishes for the image ``stem`` (e.g.
    ``memu-os_0.1.0_x86-64``) in ``output``, by :func:`role`: the UKI and the split
    partitions.

    Raises:
        MemuError: one of them is missing (the build did not finish).
    """
    found = {role(p.name): p for p in output.glob(f"{stem}.*")
             if p.name.endswith(".efi") or p.name.startswith(f"{stem}.usr")}
    wanted = [f"{stem}.efi", f"{stem}.usr.raw", f"{stem}.usr-verity.raw",
              f"{stem}.usr-verity-sig.raw"]
    missing = [w for w in wanted if w not in found]
    if missing:
        raise MemuError(f"the build left no {', '.join(missing)} in {output}",
                        hint="run `just build` and look at its output")
    return {w: found[w] for w in wanted}


def digests(files: Mapping[str, Path]) -> dict[str, str]:
    """Each file's SHA-256 (hex), by the same names."""
    return {name: sha256_file(path) for name, path in files.items()}


def differing(first: Mapping[str, str], second: Mapping[str, str]) -> list[str]:
    """The names whose digests (:func:`digests`) differ, or that are in one set only,
    sorted."""
    return sorted(n for n in set(first) | set(second) if first.get(n) != second.get(n))


def keep(artifacts: dict[str, Path], dest: Path) -> dict[str, Path]:
    """Copy ``artifacts`` into ``dest`` (made), under their role names; return the copies."""
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, path in artifacts.items():
        out[name] = dest / name
        shutil.copyfile(path, out[name])
    return out


def uki_sections(efi: Path, dest: Path) -> list[str]:
    """Dump the UKI's known PE sections into ``dest`` (one file each, named after the
    section without its dot); return the names dumped (a UKI has only some of them)."""
    dest.mkdir(parents=True, exist_ok=True)
    listing = run(["objdump", "--section-headers", str(efi)]).stdout
    present = [s for s in UKI_SECTIONS if re.search(rf"\s{re.escape(s)}\s", listing)]
    for section in present:
        run(["objcopy", "-O", "binary", f"--dump-section={section}={dest / section[1:]}",
             str(efi), str(dest / ".scratch")])
    (dest / ".scratch").unlink(missing_ok=True)
    return present


def extract_usr(partition: Path, dest: Path) -> None:
    """Extract the erofs ``/usr`` partition image into ``dest`` (fsck.erofs from mkosi's
    tools tree)."""
    dest.mkdir(parents=True, exist_ok=True)
    run([*mkosi_cmd(), "sandbox", "--", "fsck.erofs", f"--extract={dest}", "--no-preserve",
         str(partition)], hint="is mkosi's tools tree built? run `just build` once")


def diffoscope(a: Path, b: Path, report: Path) -> None:
    """Run diffoscope on two files or trees, its text report in ``report`` (Debian's
    ``diffoscope-minimal`` is installed when missing)."""
    if shutil.which("diffoscope") is None:
        run(["apt-get", "install", "-y", "--no-install-recommends", "diffoscope-minimal"],
            capture=False, hint="is deb.debian.org reachable?")
    done = subprocess.run(["diffoscope", "--text", str(report), "--no-progress",
                           f"--max-text-report-size={REPORT_MAX_BYTES}",
                           "--exclude-directory-metadata=recursive", str(a), str(b)],
                          capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise MemuError(f"diffoscope failed: {done.stderr.strip()[-500:]}")


@dataclasses.dataclass(frozen=True)
class Difference:
    """How one artifact differs between the two builds: a sentence, and whether it is a
    known difference (:data:`KNOWN_UKI_DIFFERENCES`) that the check accepts."""

    artifact: str
    sentence: str
    known: bool = False


def explain(name: str, a: Path, b: Path, work: Path) -> Difference:
    """Where ``a`` and ``b`` (two builds of the artifact ``name``) differ, with a diffoscope
    report under ``work`` where there is something to read."""
    report = work / f"{name}.diffoscope.txt"
    if name.endswith(".efi"):
        sa, sb = work / "uki-1", work / "uki-2"
        uki_sections(a, sa)
        uki_sections(b, sb)
        sections = sorted({p.name for p in [*sa.iterdir(), *sb.iterdir()]})
        changed = differing(digests({p.name: p for p in sa.iterdir()}),
                            digests({p.name: p for p in sb.iterdir()}))
        if changed and set(changed) <= set(KNOWN_UKI_DIFFERENCES):
            why = "; ".join(f".{s}: {KNOWN_UKI_DIFFERENCES[s]}" for s in changed)
            return Difference(name, f"{name}: known difference, {why}", known=True)
        for same in set(sections) - set(changed):  # diffoscope only what differs
            (sa / same).unlink(missing_ok=True)
            (sb / same).unlink(missing_ok=True)
        diffoscope(sa, sb, report)
        where = ", ".join(f".{s}" for s in changed) or "only the PE headers"
        return Difference(name, f"{name}: the UKI differs in {where} (diffoscope: {report})")
    if name.endswith(".usr.raw"):
        ta, tb = work / "usr-1", work / "usr-2"
        extract_usr(a, ta)
        extract_usr(b, tb)
        diffoscope(ta, tb, report)
        return Difference(name, f"{name}: the /usr trees differ as {report} shows")
    if name.endswith("-sig.raw"):
        return Difference(name, f"{name}: the signature of the verity root hash differs (it "
                          "follows the root hash; with the same hash and key it should not)")
    return Difference(name, f"{name}: the verity data differs (it follows /usr, or its salt "
                      "changed)")


def check(board: str, work: Path) -> list[Difference]:
    """Build twice (the second from a clean cache), compare; return how each artifact that
    differs does (empty: bit-identical).

    Raises:
        MemuError: a build failed.
    """
    stem = image_path(board).stem
    build.ensure_host(board)
    build.build(board)
    first = keep(release_artifacts(OUTPUT, stem), work / "build-1")
    build.build(board, clean=True)
    second = keep(release_artifacts(OUTPUT, stem), work / "build-2")
    first_digests = digests(first)
    changed = differing(first_digests, digests(second))
    for name in sorted(first):
        log.info("%-40s %s %s", name, first_digests[name][:16],
                 "differs" if name in changed else "identical")
    return [explain(n, first[n], second[n], work) for n in changed]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 when both builds are identical but for known differences, 1 when
    not (or on an error)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(prog="check-reproducible",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--board", default=DEFAULT_BOARD, choices=sorted(boards.BOARDS))
    ap.add_argument("--keep", type=Path, help="keep both builds' artifacts and the "
                    "reports here (default: a temporary directory, removed)")
    args = ap.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="memu-reproducible-", dir=OUTPUT))
    try:
        found = check(args.board, work)
    except MemuError as e:
        print(f"error: {e.message}" + (f"\nhint: {e.hint}" if e.hint else ""),
              file=sys.stderr)
        return 1
    problems = [d for d in found if not d.known]
    for d in found:
        print(("  " if d.known else "  NOT: ") + d.sentence)
    if problems:
        print(f"NOT reproducible (both builds and the reports are in {work})")
        return 1
    print("reproducible: both builds are bit-identical" + (
        ", except the known differences above" if found else ""))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0

if __name__ == "__main__":
    sys.exit(main())
