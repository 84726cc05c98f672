#!/usr/bin/env bash
# Install the real services the tests run against: PostgreSQL 15 with the pgvector extension
# (so the bot's semantic-search path is tested too), Synapse in its own virtualenv
# (.tools/synapse-venv, kept out of the project's .venv), and Docker's engine (tests/stack
# runs the stack's images on it). Idempotent; silent when done. Needs root for apt-get. The
# tests start their own throwaway clusters, homeservers and dockerd (memu_dev.engine).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
pg_version=15
pg_bin="/usr/lib/postgresql/$pg_version/bin"
synapse_venv="$here/.tools/synapse-venv"

say() { echo "memu: $*" >&2; }

has_candidate() {  # has_candidate PKG: apt knows an installable version of PKG
    apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [0-9]'
}

apt_install() {  # apt_install PKG…: install what is missing; apt-get update only if needed
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    for p in "${missing[@]}"; do
        if ! has_candidate "$p"; then
            say "apt-get update (no candidate for $p)"
            apt-get update -qq
            break
        fi
    done
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# --- PostgreSQL ------------------------------------------------------------------------
apt_install "postgresql-$pg_version" "postgresql-client-$pg_version"

# --- pgvector --------------------------------------------------------------------------
# bookworm has no postgresql-15-pgvector. If this apt knows one, use it; otherwise build
# Debian trixie's pgvector source package (hash-checked by apt against the signed Sources
# index) against postgresql-server-dev-15. The build takes about 15 s.
ext_dir=$("$pg_bin/pg_config" --sharedir)/extension
if [ ! -f "$ext_dir/vector.control" ]; then
    if has_candidate "postgresql-$pg_version-pgvector"; then
        apt_install "postgresql-$pg_version-pgvector"
    else
        say "building pgvector from Debian trixie's source package"
        apt_install "postgresql-server-dev-$pg_version" make gcc
        apt_dir="$here/.tools/apt-src"
        mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache" "$apt_dir/srcparts" "$apt_dir/build"
        cat > "$apt_dir/srcparts/trixie-src.sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/srcparts"
              -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
              -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
        apt-get "${opts[@]}" update -qq
        (cd "$apt_dir/build" && apt-get "${opts[@]}" -qq source --download-only pgvector >/dev/null)
        src=$(find "$apt_dir/build" -maxdepth 1 -name 'pgvector_*.orig.tar.gz' | sort | tail -1)
        rm -rf "$apt_dir/build/src" && mkdir -p "$apt_dir/build/src"
        tar -xzf "$src" -C "$apt_dir/build/src" --strip-components=1
        make -s -C "$apt_dir/build/src" PG_CONFIG="$pg_bin/pg_config" OPTFLAGS="" >/dev/null
        make -s -C "$apt_dir/build/src" PG_CONFIG="$pg_bin/pg_config" install >/dev/null
    fi
fi

# --- Docker engine ---------------------------------------------------------------------
# bookworm's docker.io (engine 20.10) loads the images `just build` makes and runs them;
# the tests start their own dockerd, so the package's service is left as apt set it up.
apt_install docker.io
# A registry on loopback (tests/stack/test_registry_copy.py) and skopeo, which copies registry
# images by digest at build time.
apt_install docker-registry skopeo

# --- FAT and GPT tools -----------------------------------------------------------------
# The Raspberry Pi 5's boot partitions are FAT; the tryboot tests (tests/ota/test_boot_tryboot.py)
# make real ones with mkfs.vfat and read and write them with mtools, as this host's kernel has
# no VFAT to mount them with, and name the slots in a real GPT with sfdisk (fdisk).
apt_install dosfstools mtools fdisk

# --- A browser -------------------------------------------------------------------------
# The first-boot page is tested in Debian's headless Chromium, driven by Playwright from PyPI
# (the project's dev extra) through executable_path: no browser download.
apt_install chromium
# Compose v2 from Debian trixie (bookworm's docker-compose is the old v1): the same package the
# OS image carries, so tests/stack runs the stack's compose.yaml as the box does. Its one
# binary needs only libc; unpacked under .tools/compose, never installed system-wide.
compose_bin="$here/.tools/compose/usr/libexec/docker/cli-plugins/docker-compose"
if [ ! -x "$compose_bin" ]; then
    say "fetching Compose v2 (docker-compose) from Debian trixie"
    apt_dir="$here/.tools/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache" "$apt_dir/srcparts" "$apt_dir/debs"
    cp "$here/tools/trixie.sources" "$apt_dir/srcparts/trixie.sources"
    opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::State::status=$apt_dir/status"
          -o "Dir::Etc::SourceParts=$apt_dir/srcparts" -o "Dir::State::Lists=$apt_dir/lists"
          -o "Dir::Cache=$apt_dir/cache" -o "APT::Get::List-Cleanup=0"
          -o "APT::Sandbox::User=root")
    touch "$apt_dir/status"
    apt-get "${opts[@]}" update -qq
    (cd "$apt_dir/debs" && apt-get "${opts[@]}" -qq download docker-compose)
    dpkg-deb -x "$(find "$apt_dir/debs" -name 'docker-compose_*.deb' | sort | tail -1)" \
        "$here/.tools/compose"
fi

# --- Synapse ---------------------------------------------------------------------------
if ! "$synapse_venv/bin/python" -c 'import synapse' 2>/dev/null; then
    say "installing Synapse into $synapse_venv"
    python3 -m venv "$synapse_venv"
    "$synapse_venv/bin/pip" install -q --upgrade pip
    "$synapse_venv/bin/pip" install -q "matrix-synapse${MEMU_SYNAPSE_VERSION:+==$MEMU_SYNAPSE_VERSION}"
fi
