"""A small QEMU harness for Memu OS images: boot, talk to the serial console, forward ports,
power off or cut power, reboot. Used by the QEMU tests, `just vm` and the boot benchmark.

QEMU runs from mkosi's tools tree (``mkosi sandbox -- qemu-system-…``) under TCG, because KVM
does not work on the build hosts. The built image is never written: the VM boots a qcow2
overlay backed by it, with its own copy of the UEFI variable store.

Test-only access to a shell uses systemd credentials passed through SMBIOS type 11
(systemd.system-credentials(7)): ``agetty.autologin=root`` logs root in on the serial console.
Nothing in the image itself enables a login; a release box has no such credential.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pexpect

from memu_common import MemuError, boards, run
from memu_dev import pifirmware
from memu_dev.paths import DEFAULT_BOARD, REPO, mkosi_cmd

log = logging.getLogger(__name__)

#: Seconds a wait on the console of a board without firmware in QEMU allows the harness to
#: start QEMU again after the guest restarted (:meth:`VM._restarted_after`).
RESTART_GRACE_S = 120.0

@dataclass(frozen=True)
class Machine:
    """How QEMU plays one architecture's board (paths are in mkosi's tools tree).

    Attributes:
        qemu: the emulator binary.
        args: machine, accelerator and CPU options.
        firmware_code: the UEFI firmware image (read only); None for a board without UEFI,
            which boots by direct kernel boot with the harness playing its firmware
            (:mod:`memu_dev.pifirmware`).
        firmware_vars: the template of its variable store (each VM gets a copy).
        console: the serial console's device name in the guest.
    """

    qemu: str
    args: tuple[str, ...]
    firmware_code: str | None = None
    firmware_vars: str | None = None
    console: str = "ttyS0"


#: Architecture (:attr:`memu_common.boards.Board.arch`) → its QEMU machine. x86-64: q35
#: with OVMF, as the N100 boots through UEFI.
MACHINES = {
    "x86-64": Machine("qemu-system-x86_64",
                      ("-machine", "q35,smm=off", "-accel", "tcg,thread=multi", "-cpu", "max"),
                      "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    # arm64 (the Pi 5): QEMU has no Pi 5 machine; its userspace boots on "virt", without
    # UEFI as on the Pi, from the kernel, initrd and command line of the boot slot the
    # harness picks as the Pi's firmware would.
    "arm64": Machine("qemu-system-aarch64",
                     ("-machine", "virt,gic-version=max", "-accel", "tcg,thread=multi",
                      "-cpu", "max"), console="ttyAMA0"),
}


def machine(board: str) -> Machine:
    """The QEMU machine for ``board``'s architecture.

    Raises:
        MemuError: unknown board, or no QEMU machine for its architecture in this harness.
    """
    arch = boards.get(board).arch
    if arch not in MACHINES:
        raise MemuError(f"the QEMU harness cannot boot {arch} images yet ({board})",
                        hint=f"boot a {boards.DEFAULT_BOARD} image")
    return MACHINES[arch]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (racy, but fine for tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class VMConfig:
    """How to boot one VM.

    Attributes:
        image: the built raw disk image (read only; an overlay is put on top).
        board: whose image it is (:mod:`memu_common.boards`): picks the QEMU machine.
        workdir: where the overlay, EFI variables and serial log go (kept after the run).
        memory_mb: guest RAM in MiB.
        cpus: virtual CPUs (TCG threads).
        disk_size: virtual size of the overlay (e.g. "16G"); None keeps the image's size.
        forwards: guest TCP port -> host port on 127.0.0.1 (0 picks a free one).
        credentials: systemd credentials (name -> value) passed through SMBIOS type 11.
        shell: log root in on the serial console (test-only, via a credential).
        extra_cmdline: kernel command line added through systemd-stub's SMBIOS hook.
        snapshottable: boot so that the running VM can be saved and restored (see
            :mod:`memu_dev.golden`): the disk on virtio-blk (QEMU cannot migrate its NVMe
            device), the UEFI variables as qcow2 (a raw pflash blocks snapshots) and a QMP
            socket. Off, the disk is on NVMe, as on the N100.
        backing: for a restored VM, the golden disk and variable store (qcow2) its own
            overlays are backed by, instead of the built image and OVMF's template.
    """

    image: Path
    workdir: Path
    board: str = DEFAULT_BOARD
    memory_mb: int = 3072
    cpus: int = 2
    disk_size: str | None = None
    forwards: dict[int, int] = field(default_factory=lambda: {80: 0})
    credentials: dict[str, str] = field(default_factory=dict)
    shell: bool = True
    extra_cmdline: str = ""
    snapshottable: bool = False
    backing: tuple[Path, Path] | None = None


class VM:
    """One running QEMU guest. Use as a context manager, or call start()/stop().

    Every wait takes a deadline in seconds and raises MemuError (with the tail of the serial
    log) when it passes.
    """

    def __init__(self, config: VMConfig) -> None:
        self.config = config
        self.machine = machine(config.board)
        self.workdir = config.workdir
        self.serial_log = self.workdir / "serial.log"
        self.overlay = self.workdir / "disk.qcow2"
        self.efivars = self.workdir / ("efivars.qcow2" if config.snapshottable else "efivars.fd")
        self.qmp_socket = self.workdir / "qmp.sock"
        # a saved state to resume instead of booting (zstd-compressed: memu_dev.golden)
        self.incoming: Path | None = None
        self.ports: dict[int, int] = {}
        self._child: pexpect.spawn | None = None
        self._started_at = 0.0
        #: Without UEFI: the boot the harness's firmware picked, and whether the next boot
        #: carries the one-shot tryboot flag (set when the guest asked for it).
        self.direct: pifirmware.DirectBoot | None = None
        self.tryboot_next = False
        self._lock = threading.Lock()
        self._boot_log_offset = 0  # where this boot's console starts in serial_log
        self._watcher: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def direct_boot(self) -> bool:
        """Whether QEMU boots the kernel itself, the harness playing the board's firmware
        (a machine without UEFI: :mod:`memu_dev.pifirmware`)."""
        return self.machine.firmware_code is None

    @property
    def disk(self) -> str:
        """The guest's disk device: ``/dev/vda`` (snapshottable) or ``/dev/nvme0n1``."""
        return "/dev/vda" if self.config.snapshottable else "/dev/nvme0n1"

    def part(self, number: int) -> str:
        """The guest's device node of partition ``number`` of its disk."""
        return f"{self.disk}{number}" if self.config.snapshottable else f"{self.disk}p{number}"

    def create_disk(self) -> None:
        """Create the copy-on-write overlay and the writable EFI variable store."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.overlay.exists():
            return
        tool = [*mkosi_cmd(), "sandbox", "--"]
        overlay = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if self.config.backing is not None:
            disk, efivars = self.config.backing
            run([*tool, *overlay, "-F", "qcow2", "-b", str(disk), str(self.overlay)], cwd=REPO)
            run([*tool, *overlay, "-F", "qcow2", "-b", str(efivars), str(self.efivars)],
                cwd=REPO)
            return
        argv = [*tool, *overlay, "-F", "raw", "-b", str(self.config.image.resolve()),
                str(self.overlay)]
        if self.config.disk_size:
            argv.append(self.config.disk_size)
        run(argv, cwd=REPO, hint="is the tools tree built? run `just build`")
        if self.machine.firmware_vars is None:
            return
        if self.config.snapshottable:
            run([*tool, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2",
                 self.machine.firmware_vars, str(self.efivars)], cwd=REPO)
        else:
            run([*tool, "cp", self.machine.firmware_vars, str(self.efivars)], cwd=REPO)

    def qemu_argv(self) -> list[str]:
        """The full QEMU command line for this VM (ports must already be chosen)."""
        hostfwd = "".join(f",hostfwd=tcp:127.0.0.1:{h}-:{g}" for g, h in self.ports.items())
        smbios: list[str] = []
        creds = dict(self.config.credentials)
        if self.config.shell:
            creds.setdefault("agetty.autologin", "root")
            creds.setdefault("login.noauth", "yes")
        snap = self.config.snapshottable
        boot: list[str] = []
        if self.direct_boot:
            # Direct kernel boot: no SMBIOS without firmware, so credentials and extra
            # arguments go on the command line (systemd.system-credentials(7)).
            if self.direct is None:
                raise MemuError("no boot slot was picked for this VM", hint="use start()")
            # The board's own consoles (the Pi's debug UART is ttyAMA10) are dropped: with
            # another ttyAMA index named first, the kernel never enabled QEMU's ttyAMA0.
            board = [w for w in self.direct.cmdline.split() if not w.startswith("console=")]
            line = " ".join([*board, f"console={self.machine.console}",
                             *(f"systemd.set_credential={k}:{v}" for k, v in creds.items()),
                             self.config.extra_cmdline]).strip()
            boot = ["-kernel", str(self.direct.kernel), "-initrd", str(self.direct.initrd),
                    "-append", line, "-dtb", str(self.direct.dtb), "-no-reboot"]
        else:
            for name, value in creds.items():
                smbios += ["-smbios", f"type=11,value=io.systemd.credential:{name}={value}"]
            if self.config.extra_cmdline:
                smbios += ["-smbios", "type=11,value=io.systemd.stub.kernel-cmdline-extra="
                           + self.config.extra_cmdline]
            boot = ["-drive", f"if=pflash,format=raw,readonly=on,file={self.machine.firmware_code}",
                    "-drive", f"if=pflash,format={'qcow2' if snap else 'raw'},file={self.efivars}"]
        extra: list[str] = []
        if snap:
            extra += ["-qmp", f"unix:{self.qmp_socket},server=on,wait=off"]
        if self.incoming is not None:
            extra += ["-incoming", f"exec:zstd -d -q -c {self.incoming}"]
        return [
            self.machine.qemu, *self.machine.args,
            "-smp", str(self.config.cpus), "-m", str(self.config.memory_mb),
            *boot,
            "-drive", f"if=none,id=disk0,format=qcow2,file={self.overlay},discard=unmap",
            "-device", "virtio-blk-pci,drive=disk0" if snap else "nvme,serial=memu0,drive=disk0",
            "-nic", f"user,model=virtio-net-pci{hostfwd}",
            "-device", "virtio-rng-pci",
            "-display", "none", "-vga", "none", "-monitor", "none",
            "-chardev", f"stdio,id=ser0,signal=off,logfile={self.serial_log},logappend=on",
            "-serial", "chardev:ser0",
            *smbios,
            *extra,
        ]

    def start(self) -> VM:
        """Boot the VM (returns at once; use the wait_* methods)."""
        self.create_disk()
        if not self.ports:
            self.ports = {g: (h or free_port()) for g, h in self.config.forwards.items()}
        if self.direct_boot:
            self.direct = pifirmware.boot(self.overlay, self.workdir, self._machine_dtb(),
                                          tryboot=self.tryboot_next)
            self.tryboot_next = False  # the firmware's flag is one-shot
        argv = [*mkosi_cmd(), "sandbox", "--", *self.qemu_argv()]
        log.info("booting %s (serial log: %s)", self.config.image.name, self.serial_log)
        (self.workdir / "qemu-cmdline.json").write_text(json.dumps(argv, indent=1))
        self._started_at = time.monotonic()
        self._boot_log_offset = self.serial_log.stat().st_size if self.serial_log.exists() else 0
        self._child = pexpect.spawn(argv[0], argv[1:], cwd=str(REPO), encoding="utf-8",
                                    codec_errors="replace", timeout=None, echo=False)
        if self.direct_boot and self._watcher is None:
            self._watcher = threading.Thread(target=self._restart_on_reboot, daemon=True,
                                             name=f"firmware {self.workdir.name}")
            self._watcher.start()
        return self

    def _restart_on_reboot(self) -> None:
        """Without firmware in QEMU (direct kernel boot, ``-no-reboot``), a guest restart
        ends QEMU; play the firmware: start it again with the slot the firmware would pick
        now, with the tryboot flag when the guest's kernel restarted with it. A power-off,
        or a stop by the harness, is left alone."""
        while True:
            time.sleep(0.5)
            with self._lock:
                child = self._child
                if child is None or _running(child.pid):
                    continue
                console = self.serial_log.read_bytes()[self._boot_log_offset:].decode(
                    errors="replace")
                if pifirmware.RESTARTING not in console:
                    continue  # powered off or crashed: wait_exit() and the tests see it
                child.close()
                self.tryboot_next = pifirmware.asks_tryboot(console)
                try:
                    self.start()
                except MemuError as e:  # the firmware found nothing to boot, as a Pi would
                    log.error("%s: the guest restarted but does not boot again: %s",
                              self.workdir.name, e)
                    self._child = None
                    return

    def _machine_dtb(self) -> Path:
        """The device tree QEMU makes for this VM's machine, CPUs and memory (dumped once)."""
        dtb = self.workdir / "machine.dtb"
        if not dtb.exists():
            machine_args = list(self.machine.args)
            at = machine_args.index("-machine") + 1
            machine_args[at] += f",dumpdtb={dtb}"
            run([*mkosi_cmd(), "sandbox", "--", self.machine.qemu, *machine_args,
                 "-smp", str(self.config.cpus), "-m", str(self.config.memory_mb),
                 "-display", "none"], cwd=REPO)
        return dtb

    @property
    def child(self) -> pexpect.spawn:
        if self._child is None:
            raise MemuError("the VM is not running", hint="call start() first")
        return self._child

    def alive(self) -> bool:
        """True while the QEMU process runs."""
        return self._child is not None and bool(self._child.isalive())

    def seconds_since_start(self) -> float:
        """Seconds since start() (monotonic clock)."""
        return time.monotonic() - self._started_at

    def power_cut(self) -> None:
        """Kill QEMU at once, like pulling the plug (no flush, no shutdown)."""
        with self._lock:
            if self._child is not None and self._child.isalive():
                pid = self._child.pid
                # qemu runs under mkosi's sandbox; kill the whole process group.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
                self._child.close(force=True)
            self._child = None

    def wait_exit(self, timeout: float) -> int:
        """Wait until QEMU exits (guest powered off); return its exit status."""
        child = self.child
        child.expect(pexpect.EOF, timeout=timeout)
        child.close()
        self._child = None
        return int(child.exitstatus or 0)

    def poweroff(self, timeout: float = 180) -> None:
        """Power the guest off cleanly through systemd and wait for QEMU to exit."""
        self.child.sendline("systemctl poweroff")
        try:
            self.wait_exit(timeout)
        except pexpect.TIMEOUT as e:
            self.power_cut()
            raise self._error(f"guest did not power off within {timeout}s") from e

    def stop(self) -> None:
        """Stop the VM however it can be stopped (a power cut when it does not answer)."""
        self.power_cut()

    def __enter__(self) -> VM:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- waiting and the console ---------------------------------------------------------------

    def _error(self, message: str) -> MemuError:
        tail = ""
        if self.serial_log.exists():
            lines = self.serial_log.read_text(errors="replace").splitlines()[-30:]
            tail = "\n  | " + "\n  | ".join(lines)
        return MemuError(f"{message}{tail}", hint=f"full serial log: {self.serial_log}")

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until the serial console prints something matching ``pattern`` (a regex);
        across a guest restart too on a board without firmware in QEMU (the harness starts
        QEMU again: :meth:`_restart_on_reboot`)."""
        deadline = time.monotonic() + timeout
        while True:
            child = self.child
            try:
                child.expect(pattern, timeout=max(0.0, deadline - time.monotonic()))
                break
            except pexpect.TIMEOUT as e:
                raise self._error(f"no /{pattern}/ on the console within {timeout}s") from e
            except (pexpect.EOF, ValueError) as e:  # ValueError: closed by the harness
                if not self.direct_boot or not self._restarted_after(child, deadline):
                    raise self._error(f"QEMU exited while waiting for /{pattern}/") from e
        match = child.match
        assert isinstance(match, re.Match)
        return match

    def drain(self, seconds: float) -> None:
        """Let the guest run for ``seconds``, reading its console so QEMU never blocks on
        output; across a guest restart on a board without firmware in QEMU.

        Raises:
            pexpect.EOF: QEMU exited (a UEFI board's guest powered off).
        """
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            child = self.child
            try:
                child.expect(pexpect.TIMEOUT, timeout=left)  # returns when the time is up
                return
            except (pexpect.EOF, ValueError):  # ValueError: the harness closed it (a restart)
                if not self.direct_boot:
                    raise
                if not self._restarted_after(child, deadline):
                    return

    def _restarted_after(self, child: pexpect.spawn, deadline: float) -> bool:
        """Whether the harness started QEMU again after ``child`` ended: waits for it until
        ``deadline``, and at least :data:`RESTART_GRACE_S` (the watcher notices the exit within
        a second, then the firmware's disk reads take seconds; a caller's short deadline must
        not end the wait in between)."""
        until = max(deadline, time.monotonic() + RESTART_GRACE_S)
        while time.monotonic() < until:
            with self._lock:
                if self._child is None:
                    return False
                if self._child is not child:
                    return True
            time.sleep(0.5)
        return False

    def wait_for_shell(self, timeout: float = 300) -> None:
        """Wait until the autologin root shell answers commands, then make it quiet (no
        echo, no kernel messages, no pagers or colours).

        Keeps pressing Enter and trying a command, because input typed while login(1) is
        still setting up the terminal is flushed, and a prompt may have been drained earlier.
        """
        deadline = time.monotonic() + timeout
        if self.direct_boot:
            # Direct kernel boot (arm64): what is typed before the autologin prompt is lost
            # and the shell never answered; so wait for the prompt first.
            self.wait_for(r"root@\S+:~# ", timeout)
        while True:
            try:
                self.sh("stty -echo cols 500; dmesg -n 1; "
                        "export SYSTEMD_PAGER= SYSTEMD_COLORS=0 TERM=dumb", timeout=15)
                return
            except MemuError as e:
                if not self.alive():
                    raise self._error("QEMU exited while waiting for the shell") from e
                if time.monotonic() > deadline:
                    raise self._error(f"no root shell on the console within {timeout}s"
                                      ) from None
                self.child.sendline("")

    def sh(self, command: str, timeout: float = 60, check: bool = True) -> str:
        """Run a shell command as root in the guest; return its output (stdout and stderr).

        Raises:
            MemuError: the command did not finish within ``timeout`` seconds, or (with
                ``check``) exited non-zero.
        """
        tag = secrets.token_hex(4)
        self.child.sendline(f"echo B{tag}; {command} 2>&1; echo E{tag} $?")
        self.wait_for(rf"B{tag}\r*\n", timeout)
        m = self.wait_for(rf"E{tag} (\d+)\r*\n", timeout)
        out = str(self.child.before).replace("\r", "").rstrip("\n")
        status = int(m.group(1))
        if check and status != 0:
            raise MemuError(f"`{command}` failed in the guest (exit {status}): {out[-2000:]}")
        return out

    def sh_status(self, command: str, timeout: float = 60) -> int:
        """Run a guest shell command and return its exit status only."""
        tag = secrets.token_hex(4)
        self.child.sendline(f"{command} >/dev/null 2>&1; echo S{tag} $?")
        return int(self.wait_for(rf"S{tag} (\d+)\r*\n", timeout).group(1))

    # -- HTTP through a forwarded port ----------------------------------------------------------

    def url(self, path: str = "/", guest_port: int = 80) -> str:
        """The host URL that reaches ``path`` on the guest's forwarded ``guest_port``."""
        return f"http://127.0.0.1:{self.ports[guest_port]}{path}"

    def http_get(self, path: str = "/", guest_port: int = 80, timeout: float = 10
                 ) -> tuple[int, str]:
        """GET a path from the guest; return (status, body). Raises OSError when unreachable."""
        try:
            with urllib.request.urlopen(self.url(path, guest_port), timeout=timeout) as r:
                return int(r.status), r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode("utf-8", "replace")

    def wait_http(self, path: str = "/", guest_port: int = 80, timeout: float = 300
                  ) -> tuple[int, str]:
        """Poll ``path`` until the guest answers; return (status, body) of the first answer."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise self._error("QEMU exited while waiting for HTTP")
            try:
                return self.http_get(path, guest_port, timeout=5)
            except OSError:
                pass
            # Keep draining the console so QEMU never blocks on a full pty.
            with contextlib.suppress(pexpect.TIMEOUT):
                self.child.expect(pexpect.TIMEOUT, timeout=1)
            if time.monotonic() > deadline:
                raise self._error(f"{self.url(path, guest_port)} did not answer in {timeout}s")


def copy_log_for(name: str, vm: VM, dest_root: Path) -> Path:
    """Copy a VM's serial log to ``dest_root/<name>.serial.log`` and return the new path."""
    dest_root.mkdir(parents=True, exist_ok=True)
    dest = dest_root / f"{name}.serial.log"
    if vm.serial_log.exists():
        shutil.copyfile(vm.serial_log, dest)
    return dest


def kill_stray(workdir: Path) -> None:
    """Kill QEMU processes left over from a crashed run that used ``workdir``."""
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        subprocess.run(["pkill", "-f", f"file={workdir}/disk.qcow2"], check=False)


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs (not exited: missing or a zombie), without reaping
    it (pexpect does that when the child is closed)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
