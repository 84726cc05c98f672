"""Logging: journald priority prefixes under systemd, timestamps elsewhere."""

from __future__ import annotations

import logging
import os
import sys

from memu_agent.logs import JournalFormatter, setup_logging, stderr_is_journal


def record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("memu_agent.x", level, __file__, 1, msg, None, None)


def test_journal_formatter_prefixes_every_line_with_priority() -> None:
    fmt = JournalFormatter()
    assert fmt.format(record(logging.ERROR, "bad\nworse")) == ("<3>memu_agent.x: bad\n<3>worse")
    assert fmt.format(record(logging.INFO, "fine")) == "<6>memu_agent.x: fine"
    assert fmt.format(record(logging.WARNING, "hmm")).startswith("<4>")


def test_journal_stream_detection() -> None:
    st = os.fstat(sys.stderr.fileno())
    assert stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
    assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"})
    assert not stderr_is_journal({})


def test_setup_logging_picks_the_format() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        st = os.fstat(sys.stderr.fileno())
        setup_logging(debug=True, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert isinstance(root.handlers[0].formatter, JournalFormatter)
        assert root.level == logging.DEBUG
        setup_logging(env={})
        assert not isinstance(root.handlers[0].formatter, JournalFormatter)
        assert root.level == logging.INFO
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
