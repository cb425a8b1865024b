"""A heavyweight demo bot for the fleet-memory benchmark (``fleet_memory.py``).

It stands in for KissBot's ``main.py`` where memory is concerned: what a real
bot imports at scale (asyncio, ssl with a context made at import as aiohttp
does, sqlite3, cryptography, yaml, email, http, logging, json...; aiohttp and
twitchAPI themselves are not in the bench environment: hypothesis, a large
pure-Python library that starts no thread at import, stands in for their
weight, so that one bot is about 60 MB RSS, near the real one), per-channel state, and
chat activity that allocates and runs the garbage collector, which is what
turns shared pages private in forked children without ``gc.freeze()``.

Run as ``PYTHON main.py --channel CH [--activity-sec S] [--memory-merge]``; it
sends sd_notify READY=1 (and writes pids/CH.ready) once started, WATCHDOG=1
never (the benchmark sets no watchdog). ``--memory-merge`` opts the process's
memory into KSM first (``PR_SET_MEMORY_MERGE``, what systemd's ``MemoryKSM=``
sets before exec), for the benchmark's KSM rows.
"""

import argparse
import asyncio
import asyncio.subprocess
import bz2
import collections
import concurrent.futures
import csv
import dataclasses
import decimal
import difflib
import doctest
import email.mime.multipart
import email.mime.text
import fractions
import gc
import gzip
import hashlib
import html.parser
import http.client
import imaplib
import inspect
import ipaddress
import json
import logging
import logging.handlers
import lzma
import mailbox
import multiprocessing
import os
import pickle
import pydoc
import random
import smtplib
import socket
import sqlite3
import ssl
import statistics
import tarfile
import tomllib
import unittest
import urllib.request
import uuid
import xml.dom.minidom
import xml.etree.ElementTree
import xmlrpc.client
import zipfile
import zoneinfo

import cryptography.fernet
import cryptography.hazmat.primitives.asymmetric.ec
import cryptography.x509
import hypothesis
import jeepney
import prometheus_client
import pygments.formatters  # type: ignore[import-untyped]
import pygments.lexers  # type: ignore[import-untyped]
import pygments.lexers.python  # type: ignore[import-untyped]
import yaml

# What aiohttp does at import: one TLS context, shared by every request.
SSL_CONTEXT = ssl.create_default_context()
KEEP = (
    asyncio.subprocess, bz2, csv, dataclasses, difflib, doctest, fractions, gzip,
    html.parser, imaplib, inspect, ipaddress, lzma, mailbox, multiprocessing, pickle, pydoc,
    smtplib, statistics, tarfile, tomllib, unittest, xml.dom.minidom, xmlrpc.client, zipfile,
    collections, concurrent.futures, decimal, email.mime.multipart, email.mime.text,
    hashlib, http.client, logging.handlers, urllib.request, uuid, xml.etree.ElementTree,
    zoneinfo, cryptography.fernet, cryptography.hazmat.primitives.asymmetric.ec,
    cryptography.x509, hypothesis, jeepney, prometheus_client, pygments.formatters,
    pygments.lexers, pygments.lexers.python, yaml,
)  # fmt: skip

# What a bot's libraries build at import (twitchAPI's and aiohttp's tables, a lexer
# registry): here pygments' lexers and the Python lexer's compiled rules.
LEXER = pygments.lexers.python.PythonLexer()
LEXERS = list(pygments.lexers.get_all_lexers())

log = logging.getLogger(__name__)


def notify(message: bytes) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(message, path)


class ChannelState:
    """What a bot keeps per channel: users seen, a message history, a cache, a DB."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE TABLE seen (login TEXT PRIMARY KEY, count INTEGER)")
        self.users = {
            f"user{i}": {"id": i, "badges": ["sub"], "score": i * 1.5} for i in range(4000)
        }
        self.history: collections.deque[dict[str, object]] = collections.deque(maxlen=2000)
        self.key = cryptography.fernet.Fernet(cryptography.fernet.Fernet.generate_key())

    def chat(self, rng: random.Random) -> None:
        for _ in range(100):
            login = f"user{rng.randrange(6000)}"
            text = json.dumps({"login": login, "text": "x" * rng.randrange(80), "ts": rng.random()})
            message = json.loads(text)
            self.history.append(message)
            self.users.setdefault(login, {"id": len(self.users), "badges": [], "score": 0.0})
            self.db.execute(
                "INSERT INTO seen VALUES (?, 1) ON CONFLICT(login) DO UPDATE SET count = count + 1",
                (login,),
            )


async def run(channel: str, activity_sec: float) -> None:
    state = ChannelState(channel)
    with open(f"pids/{channel}.ready", "w") as f:  # as KissBot's bot does
        f.write("ready\n")
    notify(b"READY=1")
    log.info("%s ready", channel)
    rng = random.Random(channel)
    ticks = 0
    while True:
        await asyncio.sleep(activity_sec)
        state.chat(rng)
        ticks += 1
        if ticks % 20 == 0:
            gc.collect()  # what a long-running bot's own collections do, sooner


PR_SET_MEMORY_MERGE = 67  # linux/prctl.h, Linux 6.4+


def merge_memory() -> None:
    """Make every anonymous page of this process a candidate for KSM."""
    import ctypes  # only in the KSM rows: ctypes is not part of the measured bot

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) != 0:
        raise SystemExit(f"prctl(PR_SET_MEMORY_MERGE): {os.strerror(ctypes.get_errno())}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--channel", required=True)
    parser.add_argument("--activity-sec", type=float, default=0.5)
    parser.add_argument("--memory-merge", action="store_true")
    args, _rest = parser.parse_known_args()
    if args.memory_merge:
        merge_memory()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(run(args.channel, args.activity_sec))


if __name__ == "__main__":
    main()
