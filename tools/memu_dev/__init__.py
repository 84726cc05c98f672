"""Developer tooling for Memu OS (host side only, never shipped in an image): the build driver,
the QEMU harness and the benchmarks."""
