# Memu OS developer recipes. Logic lives in tools/ (Python: tools/memu_dev); recipes stay thin.
set shell := ["bash", "-euo", "pipefail", "-c"]

# Which board to build and boot: n100 (default) or pi5.
board := env("MEMU_BOARD", "n100")
py := justfile_directory() / ".venv/bin/python"
export PYTHONPATH := justfile_directory() / "tools"

[private]
default:
    @just --list

# Build the OS image for the board (default N100) into mkosi.output/ (sets up mkosi itself).
[group('build')]
build: _dev
    {{py}} -m memu_dev.build --board {{board}}

# Build the intelligence bot's container image (mkosi, Format=oci) into a docker-archive + lock file.
[group('build')]
build-intelligence *args: _dev
    {{py}} -m memu_dev.containers {{board}} intelligence {{args}}

# Rebuild from scratch, including mkosi's cached layers (after package list changes).
[group('build')]
build-clean: _dev
    {{py}} -m memu_dev.build --board {{board}} --clean

# Re-pin Synapse and its Python dependencies (image/synapse/requirements.in -> requirements.txt, with hashes).
[group('build')]
lock-synapse: _dev
    {{py}} -m pip install -q uv
    {{py}} -m uv pip compile image/synapse/requirements.in --universal --python-version 3.13 --generate-hashes --only-binary :all: -q -o image/synapse/requirements.txt

# Build twice (the second from a clean cache) and compare /usr, verity and the UKI byte for byte; diffoscope on a difference.
[group('build')]
check-reproducible *args: _dev
    {{py}} -m memu_dev.reproducible --board {{board}} {{args}}

# Add a built version to a release channel (stable or beta) under mkosi.output/channels, signed.
[group('build')]
release version channel="stable": _dev
    {{py}} -m memu_dev.release {{version}} {{channel}} --board {{board}}

# Write an image (.raw, .raw.xz, .raw.zst) to a whole disk, head last, and read it back; refuses this machine's disk and mounted, read-only or too-small ones.
[group('run')]
flash image device *args: _dev
    {{py}} -m memu_ota.flash {{image}} {{device}} {{args}}

# Boot the built image in QEMU on a copy-on-write overlay; prints the first-boot page URL.
[group('run')]
vm *args: _dev
    {{py}} -m memu_dev.vmrun --board {{board}} {{args}}

# Lint, type-check, unit tests and QEMU tests (builds the image first if missing or stale).
[group('test')]
test *args: _dev _services
    {{py}} -m memu_dev.build --board {{board}} --if-stale
    {{py}} -m memu_dev.check {{args}}

# Only the fast checks: lint, type-check and unit tests (no VM, no image).
[group('test')]
test-unit *args: _dev _services
    {{py}} -m memu_dev.check --no-qemu {{args}}

# Only the QEMU tests (pass -k to pick one), building the image if missing or stale.
[group('test')]
test-qemu *args: _dev
    {{py}} -m memu_dev.build --board {{board}} --if-stale
    {{py}} -m pytest -m "qemu and not pi5" {{args}} tests/qemu

# The Raspberry Pi 5 image in QEMU (arm64): boot, a tryboot update, a power cut, a failed
# trial, and the hailo option's module built for arm64; builds the Pi image first (about 20
# minutes the first time). Not part of `just test`.
[group('test')]
test-pi5 *args: _dev
    {{py}} -m memu_dev.build --board pi5 --if-stale
    {{py}} -m pytest -m pi5 {{args}} tests/qemu/test_pi5.py tests/qemu/test_hailo.py

# Lint and type-check only.
[group('test')]
lint: _dev
    {{py}} -m memu_dev.check --lint-only

# Boot time: median seconds from QEMU start to agent READY vs a minimal image (N boots).
[group('bench')]
bench-boot n="3": _dev
    {{py}} -m memu_dev.bench_boot --runs {{n}}

# Minor-update cost (bytes, seconds) against writing the same slot with dd, in one guest.
[group('bench')]
bench-ota: _dev
    {{py}} -m memu_dev.bench_ota

# What a delta update would fetch (4/16/64 KiB block indexes) between two releases.
[group('bench')]
bench-delta *ARGS: _dev
    {{py}} -m memu_dev.bench_delta {{ARGS}}

# Idle memory of the stack's images built here (host Docker), against the 1.5 GiB budget.
[group('bench')]
bench-stack *args: _dev _services
    {{py}} -m memu_dev.bench_stack {{args}}

# Image size: the disk image as xz with and without container archives, /usr by directory, the largest packages.
[group('bench')]
bench-size *args: _dev
    {{py}} -m memu_dev.bench_size {{args}}

# First boot: median seconds from pressing "Set up" to ready in QEMU, and each step's share, vs boot-to-READY.
[group('bench')]
bench-setup n="3": _dev
    {{py}} -m memu_dev.build --board {{board}} --if-stale
    {{py}} -m memu_dev.bench_setup --runs {{n}}

# Recall latency and bot RSS at 1k/10k/100k memories, against a naive baseline; then the
# assistant's reply latency for a burst of 50 commands over 5 rooms with a 2 s model.
[group('bench')]
bench-recall *args: _dev _services
    {{py}} -m memu_dev.bench_recall {{args}}

# Remove build outputs (keeps mkosi's caches and the fetched tools).
[group('build')]
clean:
    rm -rf mkosi.output test-results

[private]
_dev:
    @bash tools/setup-dev.sh

[private]
_services:
    @bash tools/setup-services.sh
