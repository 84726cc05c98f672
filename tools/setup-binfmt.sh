#!/usr/bin/env bash
# Let this x86-64 host run arm64 programs, so mkosi can build the Raspberry Pi 5 image (its
# package scripts, pip, dpkg run under qemu-user). Installs Debian's qemu-user-static and
# binfmt-support, mounts binfmt_misc when it is not, and registers qemu-aarch64 with the F
# ("fix binary") flag: the kernel opens the emulator once, here, so it also works inside
# mkosi's sandboxes and the image's chroot, where the host's /usr is not. Idempotent; says
# what it did. Needs root.
set -euo pipefail
say() { echo "memu: $*" >&2; }
entry=/proc/sys/fs/binfmt_misc/qemu-aarch64

if [ "$(uname -m)" = aarch64 ]; then
    exit 0
fi
if [ -f "$entry" ] && grep -qx enabled "$entry" && grep -q '^flags: .*F' "$entry"; then
    exit 0
fi
if ! dpkg-query -W -f='${Status}' qemu-user-static binfmt-support 2>/dev/null |
        grep -q 'install ok installed.*install ok installed'; then
    say "installing qemu-user-static and binfmt-support (to run arm64 programs for the build)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        qemu-user-static binfmt-support >/dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    say "mounting binfmt_misc"
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64
if ! grep -q '^flags: .*F' "$entry"; then
    say "qemu-aarch64 is registered without the F flag; mkosi's sandbox cannot use it"
    exit 1
fi
say "arm64 programs now run here through $(sed -n 's/^interpreter //p' "$entry")"
