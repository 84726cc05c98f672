"""Golden VM snapshots: boot a built image once, save the running VM, and start each test
from a copy of that moment instead of a first boot (about 10 s instead of 150 s under TCG).

How (QEMU's migration to a file; qemu-qmp's QMP client):
1. :func:`make_golden` boots a snapshottable VM (virtio-blk disk, qcow2 UEFI variables, QMP
   socket: see :class:`memu_dev.vm.VMConfig`), waits until the box is up (agent READY, root
   shell, boot complete), then QMP ``stop`` and ``migrate`` to ``exec:cat > state``, and
   ``quit``. Its disk overlay, variable store and serial log become read-only backing files.
   The state goes through ``zstd -1`` (2.8 GB of guest RAM became 1.0 GB in 8 s here: a
   test run's disk is not always large, and the state lives for the whole run).
2. :func:`restore` makes a VM whose own qcow2 overlays are backed by those files, starts QEMU
   with the same devices plus ``-incoming exec:zstd -dc state.zst``, waits for the migration to
   complete, sends ``cont``, and sets the guest's clock to the host's (it resumes at the
   snapshot's time, and signature checks care). The golden boot's console log is copied in
   first, so what the first boot printed is still there to check.

A golden snapshot is reused while the image it came from is unchanged (same path, size and
mtime): see ``stamp.json`` in its directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol

from memu_common import MemuError
from memu_dev.paths import REPO
from memu_dev.vm import VM, VMConfig

log = logging.getLogger(__name__)

STATE = "state.zst"
#: The snapshot the QEMU tests and the benchmarks share (one first boot per image).
SHARED = REPO / "test-results" / "qemu" / "golden"
HARNESS = 2  # bump when what a golden VM holds changes, to throw old ones away


@dataclass(frozen=True)
class Golden:
    """A saved VM: its directory holds ``disk.qcow2``, ``efivars.qcow2``, ``state`` and
    ``serial.log``; ``config`` is how it was booted (a restore uses the same devices)."""

    directory: Path
    config: VMConfig

    @property
    def state(self) -> Path:
        return self.directory / STATE


def _stamp(config: VMConfig) -> dict[str, Any]:
    st = config.image.stat()
    return {"harness": HARNESS, "image": str(config.image.resolve()), "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "memory_mb": config.memory_mb, "cpus": config.cpus,
            "disk_size": config.disk_size, "credentials": config.credentials}


def _qmp(vm: VM, timeout: float = 30) -> QEMUMonitorProtocol:
    """Connect to ``vm``'s QMP socket (waiting for QEMU to create it)."""
    deadline = time.monotonic() + timeout
    while not vm.qmp_socket.exists():
        if time.monotonic() > deadline or not vm.alive():
            raise MemuError(f"QEMU made no QMP socket at {vm.qmp_socket}",
                            hint=f"see {vm.serial_log}")
        time.sleep(0.1)
    qmp = QEMUMonitorProtocol(str(vm.qmp_socket))
    qmp.connect()
    return qmp


def _close(qmp: QEMUMonitorProtocol) -> None:
    """Close a QMP connection; QEMU having closed its end already (after ``quit``, or when
    it exited) is not an error."""
    with contextlib.suppress(EOFError, OSError):
        qmp.close()


def _wait_migration(qmp: QEMUMonitorProtocol, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = qmp.cmd_obj({"execute": "query-migrate"}).get("return", {}).get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise MemuError(f"QEMU migration {status}", hint="see the QEMU output in the log")
        if time.monotonic() > deadline:
            raise MemuError(f"QEMU migration still {status!r} after {timeout}s")
        time.sleep(0.2)


def make_golden(directory: Path, config: VMConfig, *, ready_timeout: float = 1200) -> Golden:
    """Boot ``config``'s image once and save the running VM in ``directory`` (reused when the
    image is unchanged).

    Raises:
        MemuError: the VM did not come up, or could not be saved.
    """
    config = replace(config, workdir=directory, snapshottable=True, backing=None)
    stamp = directory / "stamp.json"
    want = _stamp(config)
    if stamp.exists() and (directory / STATE).exists():
        try:
            if json.loads(stamp.read_text()) == want:
                log.info("reusing the golden VM in %s", directory)
                return Golden(directory, config)
        except ValueError:
            pass
    shutil.rmtree(directory, ignore_errors=True)
    vm = VM(config)
    vm.start()
    try:
        vm.wait_http("/api/status", timeout=ready_timeout)
        vm.wait_for_shell(timeout=300)
        # boot complete (health gate passed, entry blessed) and nothing left starting
        vm.sh("systemctl is-system-running --wait; systemctl start boot-complete.target",
              timeout=ready_timeout, check=False)
        # The page cache (the container archives just loaded, ~1 GB) would be saved too.
        vm.sh("sync; echo 3 > /proc/sys/vm/drop_caches", timeout=120)
        qmp = _qmp(vm)
        try:
            qmp.cmd_obj({"execute": "stop"})
            qmp.cmd_obj({"execute": "migrate",
                         "arguments": {"uri": f"exec:zstd -1 -q -c > {directory / STATE}"}})
            _wait_migration(qmp, timeout=300)
            qmp.cmd_obj({"execute": "quit"})
        finally:
            _close(qmp)  # after "quit" QEMU may already have hung up
        vm.wait_exit(timeout=60)
    except BaseException:
        vm.stop()
        raise
    stamp.write_text(json.dumps(want))
    for f in (vm.overlay, vm.efivars, vm.serial_log, directory / STATE):
        f.chmod(0o444)  # backing files from now on
    log.info("golden VM saved in %s (%d MiB of compressed state)", directory,
             (directory / STATE).stat().st_size >> 20)
    return Golden(directory, config)


def shared(image: Path) -> Golden:
    """The first boot of ``image`` on a 16 GiB disk (bigger than the image, as after flashing
    a drive) in :data:`SHARED`, made when missing or stale (:func:`make_golden`)."""
    return make_golden(SHARED, VMConfig(image=image, workdir=SHARED, disk_size="16G"))


def restore(golden: Golden, workdir: Path, *, timeout: float = 120) -> VM:
    """A running VM resumed from ``golden`` with its own overlays in ``workdir`` (emptied
    first), its clock set to now and a root shell that answers.

    Raises:
        MemuError: QEMU could not resume the state in time.
    """
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    config = replace(golden.config, workdir=workdir,
                     backing=(golden.directory / "disk.qcow2",
                              golden.directory / "efivars.qcow2"))
    vm = VM(config)
    shutil.copyfile(golden.directory / "serial.log", vm.serial_log)
    vm.serial_log.chmod(0o644)
    vm.incoming = golden.state
    vm.start()
    vm.incoming = None  # a later start() boots for real
    try:
        qmp = _qmp(vm)
        try:
            deadline = time.monotonic() + timeout
            while qmp.cmd_obj({"execute": "query-status"})["return"]["status"] == "inmigrate":
                if time.monotonic() > deadline:
                    raise MemuError(f"QEMU did not load {golden.state} within {timeout}s")
                time.sleep(0.2)
            qmp.cmd_obj({"execute": "cont"})
        finally:
            _close(qmp)
        vm.sh(f"date -s @{time.time():.3f} >/dev/null", timeout=60)
    except BaseException:
        vm.stop()
        raise
    return vm

