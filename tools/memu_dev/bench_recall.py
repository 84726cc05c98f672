"""Recall retrieval benchmark: latency of the bot's memory search at 1k/10k/100k memories.

Runs ``MemoryStore.search`` (full-text + pgvector semantic ranking when available; the
Ollama embedding call is excluded: a precomputed query vector is passed) against one room
holding N synthetic memories, bulk-loaded with COPY, and a naive ``ILIKE`` scan of the same
rows as a same-machine baseline. Prints p50/p95 per size, the speed-up over the baseline,
and the benchmark process's RSS (it holds the bot's store code and connection pool). Questions
in Chinese (matched by character bigrams over the room's rows: no index) are timed too.
Then the assistant under load (:mod:`memu_dev.bench_fairness`): reply latency of a burst
of 50 commands over 5 rooms with a 2 s model, against an instant one.

    cd tools && python -m memu_dev.bench_recall [--sizes 1000,10000] [--queries 200]

Without ``--database-url`` it starts a throwaway PostgreSQL 15 cluster (as the ``postgres``
user when run as root); install it with ``tools/setup-services.sh``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import os
import pwd
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

from memu_dev import bench_fairness
from memu_intelligence.memory import MemoryStore, vector_literal
from memu_intelligence.migrations import enable_vector, migrate

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ROOM = "!family:memu.bench"
TARGET_P95_MS = 50.0
_STOP = ("the", "is", "a", "on", "in", "of", "to", "and", "where", "what", "our")


def bow_embedding(text: str, dim: int) -> list[float]:
    """Hashed bag-of-words vector (stands in for an embedding model; same cost to search)."""
    vec = [0.0] * dim
    for word in text.lower().split():
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
        vec[h % dim] += 1.0
    norm = math.sqrt(sum(x * x for x in vec)) or 1.0
    return [x / norm for x in vec]


class Corpus:
    """Deterministic synthetic family facts: Zipf-distributed words from a fixed vocabulary."""

    def __init__(self, seed: int = 7, vocabulary: int = 5000) -> None:
        self.rng = random.Random(seed)
        syllables = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "da", "jo", "bu"]
        words: set[str] = set()
        while len(words) < vocabulary:
            words.add("".join(self.rng.choices(syllables, k=self.rng.randint(2, 4))))
        self.words = sorted(words)
        self.weights = [1.0 / (i + 1) for i in range(len(self.words))]

    def sentence(self, lo: int = 6, hi: int = 14) -> str:
        picked = self.rng.choices(self.words, self.weights, k=self.rng.randint(lo, hi))
        filler = self.rng.choices(_STOP, k=3)
        return " ".join(picked[:2] + filler[:1] + picked[2:] + filler[1:])

    def question(self) -> str:
        return "where is the " + " ".join(self.rng.choices(self.words, self.weights[::-1],
                                                           k=self.rng.randint(2, 3)))


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A temporary PostgreSQL cluster on a free loopback port; yields its DSN."""
    if not (PG_BIN / "initdb").exists():
        sys.exit(f"bench: PostgreSQL 15 not found in {PG_BIN} (run tools/setup-services.sh)")
    user = "postgres" if os.geteuid() == 0 and _has_user("postgres") else None
    root = Path(tempfile.mkdtemp(prefix="memu-bench-pg-"))
    root.chmod(0o755)
    if user:
        shutil.chown(root, user)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def pg(*argv: str | Path) -> None:
        subprocess.run([str(a) for a in argv], user=user, check=True, capture_output=True,
                       timeout=120)

    try:
        pg(PG_BIN / "initdb", "-D", root / "data", "-U", "memu", "--auth=trust", "--no-sync")
        pg(PG_BIN / "pg_ctl", "-D", root / "data", "-l", root / "log", "-w", "-o",
           f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off "
           "-c shared_buffers=256MB -c maintenance_work_mem=512MB", "start")
        yield f"host=127.0.0.1 port={port} user=memu dbname=postgres"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            pg(PG_BIN / "pg_ctl", "-D", root / "data", "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


async def load(pool: AsyncConnectionPool, corpus: Corpus, count: int, dim: int | None) -> None:
    """COPY ``count`` more memories into the bench room (with embeddings when ``dim``)."""
    cols = "room_id, author, body, tags" + (", embedding" if dim else "")
    async with pool.connection() as conn, conn.cursor() as cur:
        if dim:
            await cur.execute("DROP INDEX IF EXISTS household_memory_embedding")
        async with cur.copy(f"COPY household_memory ({cols}) FROM STDIN") as copy:
            for _ in range(count):
                body = corpus.sentence()
                row: list[object] = [ROOM, "@bench:memu.bench", body, []]
                if dim:
                    row.append(vector_literal(bow_embedding(body, dim)))
                await copy.write_row(row)
        if dim:
            await cur.execute("SET max_parallel_maintenance_workers = 2")
            await cur.execute("CREATE INDEX household_memory_embedding ON household_memory"
                              " USING hnsw (embedding vector_cosine_ops)")
        await cur.execute("ANALYZE household_memory")


async def timed(queries: Sequence[str], run: object) -> list[float]:
    """Milliseconds per query for ``await run(question)``."""
    out = []
    for q in queries:
        t0 = time.perf_counter()
        await run(q)  # type: ignore[operator]
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pct(samples: list[float], p: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(p) - 1]


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB."""
    cur = 0.0
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
    return cur, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def bench(dsn: str, sizes: list[int], n_queries: int, dim: int, use_vector: bool) -> bool:
    name = f"bench_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    db_dsn = dsn.replace("dbname=postgres", f"dbname={name}")
    pool = AsyncConnectionPool(db_dsn, min_size=1, max_size=2, open=False,
                               kwargs={"autocommit": True})
    await pool.open(wait=True, timeout=30)
    ok = True
    try:
        await migrate(pool)
        vector = use_vector and await enable_vector(pool, dim)
        store = MemoryStore(pool, vector=vector)
        corpus = Corpus()
        queries = [corpus.question() for _ in range(n_queries)]
        vectors = {q: bow_embedding(q, dim) for q in queries}

        cjk = [f"{a}{b}在哪里" for a in "钥门车猫狗书" for b in "匙卡票粮绳包"][:n_queries]

        async def ours(q: str) -> None:
            await store.search(ROOM, q, embedding=vectors.get(q) if vector else None)

        async def naive(q: str) -> None:
            words = [w for w in q.split() if w not in _STOP]
            where = " OR ".join(["body ILIKE %s"] * len(words))
            async with pool.connection() as conn:
                await conn.execute(
                    f"SELECT id, body FROM household_memory WHERE room_id = %s AND ({where})"
                    " ORDER BY id DESC LIMIT 5", [ROOM, *(f"%{w}%" for w in words)])

        mode = f"full-text + pgvector HNSW ({dim}-d)" if vector else "full-text only"
        print(f"recall retrieval, {mode}; {n_queries} queries per size; one room")
        print(f"{'memories':>9} {'load s':>7} {'p50 ms':>7} {'p95 ms':>7} {'ILIKE p50':>9} "
              f"{'ILIKE p95':>9} {'speed-up':>8} {'CJK p95':>8} {'RSS MiB':>8}")
        loaded = 0
        for size in sorted(sizes):
            t0 = time.perf_counter()
            await load(pool, corpus, size - loaded, dim if vector else None)
            loaded = size
            load_s = time.perf_counter() - t0
            await timed(queries[:10], ours)  # warm caches
            a = await timed(queries, ours)
            b = await timed(queries, naive)
            c = await timed(cjk, ours)
            cur, _ = rss_mb()
            p95 = pct(a, 95)
            print(f"{size:>9,} {load_s:>7.1f} {pct(a, 50):>7.2f} {p95:>7.2f} {pct(b, 50):>9.2f} "
                  f"{pct(b, 95):>9.2f} {pct(b, 95) / p95:>7.1f}x {pct(c, 95):>8.2f} "
                  f"{cur:>8.0f}", flush=True)
            if size >= 100_000 and p95 > TARGET_P95_MS:
                ok = False
        print(f"peak RSS {rss_mb()[1]:.0f} MiB; target: p95 < {TARGET_P95_MS:.0f} ms at 100,000")
    finally:
        await pool.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return ok


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when p95 at 100,000 memories misses the target."""
    p = argparse.ArgumentParser(prog="bench_recall", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000",
                   help="comma-separated memory counts (default: %(default)s)")
    p.add_argument("--queries", type=int, default=200, help="queries per size")
    p.add_argument("--dim", type=int, default=64, help="embedding dimension")
    p.add_argument("--no-vector", action="store_true", help="full-text search only")
    p.add_argument("--no-concurrency", action="store_true",
                   help="skip the assistant-under-load burst (needs Synapse)")
    p.add_argument("--database-url", help="an existing PostgreSQL (superuser; a scratch "
                   "database is created and dropped); default: a throwaway cluster")
    args = p.parse_args(argv)
    try:
        sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error("--sizes takes numbers like 1000,10000")
    if not sizes or min(sizes) < 1 or args.queries < 2:
        p.error("need at least one positive size and two queries")
    with contextlib.ExitStack() as stack:
        dsn = args.database_url or stack.enter_context(throwaway_postgres())
        ok = asyncio.run(bench(dsn, sizes, args.queries, args.dim, not args.no_vector))
    if not args.no_concurrency:
        print()
        ok = asyncio.run(bench_fairness.run()) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
