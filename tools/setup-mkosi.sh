#!/usr/bin/env bash
# Fetch mkosi 25.3 from Debian trixie (bookworm's mkosi 14 is too old; mkosi is not on PyPI)
# and unpack it under .tools/mkosi. Prints the PYTHONPATH to use. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest="$here/.tools/mkosi"
want="${MEMU_MKOSI_VERSION:-25.3}"
if [ -f "$dest/usr/lib/python3/dist-packages/mkosi/__init__.py" ]; then
    exit 0
fi
echo "memu: fetching mkosi $want from Debian trixie into $dest" >&2
apt_dir="$here/.tools/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$dest"
cp "$here/tools/trixie.sources" "$apt_dir/trixie.sources"
opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::State::status=$apt_dir/status" -o "Dir::Etc::SourceParts=$apt_dir/srcparts"
      -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o "APT::Get::List-Cleanup=0")
mkdir -p "$apt_dir/srcparts" "$apt_dir/cache"
cp "$here/tools/trixie.sources" "$apt_dir/srcparts/trixie.sources"
apt-get "${opts[@]}" update -qq
(cd "$apt_dir" && apt-get "${opts[@]}" download "mkosi=$want*")
dpkg-deb -x "$apt_dir"/mkosi_*.deb "$dest"
