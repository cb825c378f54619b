"""The ``libkv`` command line: read, write, list, watch and lock keys in any store.

Usage (also ``python -m libkv``)::

    libkv [--url URL] get KEY
    libkv [--url URL] put [--ttl SECONDS] [--create | --version N] KEY VALUE
    libkv [--url URL] rm [--recursive | --version N] KEY
    libkv [--url URL] ls [--long] [PREFIX | --glob PATTERN]
    libkv [--url URL] watch [--recursive] [--since REVISION] [--json] [--count N] KEY
    libkv [--url URL] lock [--ttl SECONDS] [--timeout SECONDS] KEY -- COMMAND [ARG...]
    libkv [--url URL] services [--root ROOT] [SERVICE]
    libkv schemes
    libkv [--url URL] demo

The store is ``--url`` (accepted before or after the command), else ``$LIBKV_URL``,
else the SQLite file ``$XDG_DATA_HOME/libkv/libkv.db`` (``~/.local/share/libkv/libkv.db``
when ``XDG_DATA_HOME`` is unset), whose directory is created on first use.

Input and output:

- ``get`` writes the value's raw bytes to stdout; a newline is added only when stdout
  is a terminal, so ``libkv get k > file`` copies the value byte for byte.
- ``put`` prints the new version. VALUE ``-`` reads the value from stdin (to store a
  literal ``-``, pipe it in). ``--create`` fails if the key exists; ``--version N``
  writes only if the key is at version N (compare-and-set).
- ``rm`` prints nothing; ``rm --recursive`` deletes everything under KEY and prints
  how many keys it deleted.
- ``ls`` prints one key per line; ``--long`` prints ``VERSION SIZE KEY``.
- ``watch`` prints one readable line per event (``--json``: one JSON object per line,
  ``{"action", "key", "value", "version", "revision"}``, with ``"encoding": "base64"``
  when the value is not UTF-8, and for ``init`` a ``"snapshot"`` list of
  ``{"key", "value", "version"}``). It runs until Ctrl-C (exit 0), ``--count`` events,
  or an error.
- ``services`` prints the registered service names (``libkv.recipes.ServiceRegistry``
  under ROOT, default ``services``), one per line; with SERVICE, one line per live
  instance, ``ID ADDRESS METADATA`` (METADATA is the instance's JSON object).
- ``lock`` holds the lock while COMMAND runs, with ``LIBKV_LOCK_TOKEN`` (the fencing
  token) in its environment, and exits with COMMAND's exit status (128 + N if it was
  killed by signal N; 127 if it cannot be found, 126 if it cannot be run). If the lock
  is lost while COMMAND runs, COMMAND is terminated and libkv exits with status 1.
  A SIGINT that reaches only libkv is passed on to COMMAND after 0.5 s. If libkv
  itself is killed, the lock is freed when its lease expires (``--ttl``).

Exit status: 0 success; 1 not found, conflict (key exists / modified), lock not
acquired in time, or another failure; 2 usage error or invalid input (key, value,
URL, option, unsupported feature); 3 store unreachable. 130 on Ctrl-C (except
``watch``, which exits 0). Errors are one line on stderr, ``libkv: error: ...``,
never a traceback; passwords in URLs are shown as ``***``. A closed stdout (``libkv
watch k | head``) ends the command silently with status 1 at its next output.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, NoReturn
from urllib.parse import quote

import libkv
from libkv.defaults import ENVIRONMENT_VARIABLE, resolve_url
from libkv.url import is_secret_option, parse_seconds, secrets_in_url

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

_PREVIEW_CHARS = 200
_GRACE = 0.5  # seconds a locked command gets to stop on its own Ctrl-C


class CommandError(Exception):
    """A failure the CLI reports itself, with its exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line on stderr and raise CommandError."""

    def error(self, message: str) -> NoReturn:
        raise CommandError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


# -- the store URL ---------------------------------------------------------------------


def _secrets(url: str | None) -> list[str]:
    """What must never be printed from the store URL: its password and tokens, longest first."""
    text = url or os.environ.get(ENVIRONMENT_VARIABLE)
    if not text:
        return []
    found = set(secrets_in_url(text))
    with contextlib.suppress(libkv.InvalidURLError):
        parsed = libkv.StoreURL.parse(text)
        if parsed.password:
            found.add(parsed.password)
        found |= {str(value) for name, value in parsed.options.items() if is_secret_option(name)}
    found |= {quote(secret, safe="") for secret in found}
    return sorted((secret for secret in found if secret), key=len, reverse=True)


def _open(arguments: argparse.Namespace) -> libkv.Store:
    return libkv.open(resolve_url(arguments.url))


# -- commands --------------------------------------------------------------------------


def _get(arguments: argparse.Namespace) -> int:
    with _open(arguments) as store:
        pair = store.get(arguments.key)
    stream = sys.stdout
    stream.flush()
    binary: IO[bytes] | None = getattr(stream, "buffer", None)
    if binary is None:  # stdout replaced by a text-only stream
        stream.write(pair.value.decode("utf-8", "backslashreplace"))
        if stream.isatty():
            stream.write("\n")
        stream.flush()
        return EXIT_OK
    binary.write(pair.value)
    if stream.isatty():
        binary.write(b"\n")
    binary.flush()
    return EXIT_OK


def _put(arguments: argparse.Namespace) -> int:
    # fsencode gives back the argument's original bytes, even if they are not UTF-8.
    value = sys.stdin.buffer.read() if arguments.value == "-" else os.fsencode(arguments.value)
    with _open(arguments) as store:
        if arguments.create:
            pair = store.create(arguments.key, value, ttl=arguments.ttl)
        elif arguments.version is not None:
            pair = store.update(arguments.key, value, version=arguments.version, ttl=arguments.ttl)
        else:
            pair = store.put(arguments.key, value, ttl=arguments.ttl)
    print(pair.version, flush=True)
    return EXIT_OK


def _rm(arguments: argparse.Namespace) -> int:
    with _open(arguments) as store:
        if arguments.recursive:
            print(store.delete_tree(arguments.key), flush=True)
        else:
            store.delete(arguments.key, version=arguments.version)
    return EXIT_OK


def _ls(arguments: argparse.Namespace) -> int:
    if arguments.glob is not None and arguments.prefix:
        raise CommandError("give a PREFIX or --glob PATTERN, not both", EXIT_USAGE)
    with _open(arguments) as store:
        if arguments.glob is None:
            pairs = store.list(arguments.prefix)
            lines = [_long_line(pair) for pair in pairs] if arguments.long else None
            keys = [pair.key for pair in pairs]
        else:
            keys = list(store.keys(arguments.glob))
            lines = [_long_line(pair) for pair in store.get_many(keys)] if arguments.long else None
    sys.stdout.write("".join(line + "\n" for line in (keys if lines is None else lines)))
    sys.stdout.flush()
    return EXIT_OK


def _long_line(pair: libkv.KVPair) -> str:
    return f"{pair.version:>10} {len(pair.value):>10} {pair.key}"


def _watch(arguments: argparse.Namespace) -> int:
    emit = _emit_json if arguments.json else _emit_text
    try:
        with (
            _open(arguments) as store,
            store.watch(
                arguments.key, recursive=arguments.recursive, since=arguments.since
            ) as watch,
        ):
            for seen, event in enumerate(watch, start=1):
                emit(event)
                if arguments.count is not None and seen >= arguments.count:
                    break
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _emit_json(event: libkv.Event) -> None:
    record: dict[str, Any] = {"action": event.action.value, "key": event.key}
    pair = event.pair
    if pair is None:
        record.update(value=None, version=None)
    else:
        record.update(_json_value(pair.value), version=pair.version)
    record["revision"] = event.revision
    if event.action is libkv.Action.INIT:
        record["snapshot"] = [
            {"key": item.key, **_json_value(item.value), "version": item.version}
            for item in event.snapshot
        ]
    print(json.dumps(record, ensure_ascii=False), flush=True)


def _json_value(value: bytes) -> dict[str, str]:
    try:
        return {"value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"value": base64.b64encode(value).decode("ascii"), "encoding": "base64"}


def _emit_text(event: libkv.Event) -> None:
    action = event.action.name.ljust(7)
    pair = event.pair
    if event.action is libkv.Action.INIT:
        if pair is not None:
            line = f"{action} {event.key} = {_preview(pair.value)} (version {pair.version})"
        elif not event.snapshot:
            line = f"{action} {event.key or '(everything)'}: absent"
        else:
            count = len(event.snapshot)
            line = f"{action} {event.key or '(everything)'}: {count} key{'s' * (count != 1)}"
        line += f" at revision {event.revision}"
        for item in event.snapshot if pair is None else ():
            line += f"\n        {item.key} = {_preview(item.value)} (version {item.version})"
    elif pair is not None:
        line = f"{action} {pair.key} = {_preview(pair.value)} (version {pair.version})"
    else:
        line = f"{action} {event.key} (revision {event.revision})"
    print(line, flush=True)


def _preview(value: bytes) -> str:
    """A value as one readable line: JSON-quoted text, or base64 for binary data."""
    try:
        text = json.dumps(value.decode("utf-8"), ensure_ascii=False)
    except UnicodeDecodeError:
        text = "base64:" + base64.b64encode(value).decode("ascii")
    if len(text) > _PREVIEW_CHARS:
        text = f"{text[:_PREVIEW_CHARS]}... ({len(value)} bytes)"
    return text


def _lock(arguments: argparse.Namespace) -> int:
    command: list[str] = arguments.command
    holder = f"libkv lock pid={os.getpid()} host={socket.gethostname()}"
    with _open(arguments) as store:
        lock = store.lock(arguments.key, ttl=arguments.ttl, value=holder)
        if not lock.acquire(timeout=arguments.timeout):
            raise CommandError(
                f"lock {arguments.key!r} not acquired within {arguments.timeout:g} s"
            )
        try:
            status = _run_locked(command, lock)
        finally:
            with contextlib.suppress(libkv.LockError):  # lost: _run_locked reported it
                lock.release()
        return status


def _run_locked(command: list[str], lock: libkv.Lock) -> int:
    """Run ``command`` while ``lock`` is held; terminate it if the lock is lost."""
    environment = dict(os.environ, LIBKV_LOCK_TOKEN=str(lock.token))
    interrupts: list[float] = []
    # From here on a SIGINT is recorded, never raised: a KeyboardInterrupt inside Popen
    # would leave COMMAND running, orphaned, with the lock released under it.
    with _recording_interrupts(interrupts):
        try:
            child = subprocess.Popen(command, env=environment)
        except FileNotFoundError as error:
            raise CommandError(f"command not found: {command[0]}", 127) from error
        except PermissionError as error:
            raise CommandError(f"cannot run {command[0]}: {error.strerror}", 126) from error
        terminated = forwarded = False
        while True:
            try:
                status = child.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            if lock.lost.is_set() and not terminated:
                terminated = True
                child.terminate()
            if len(interrupts) > 1:
                child.kill()  # a second Ctrl-C
            elif interrupts and not forwarded and time.monotonic() - interrupts[0] > _GRACE:
                # From a terminal COMMAND got the SIGINT too and had time to stop on its
                # own; still running, so the signal was sent to us alone: pass it on.
                forwarded = True
                child.send_signal(signal.SIGINT)
    if terminated or lock.lost.is_set():
        raise CommandError(
            f"lock {lock.key!r} was lost while the command ran"
            + ("; the command was terminated" if terminated else "")
        )
    return 128 - status if status < 0 else status


def _services(arguments: argparse.Namespace) -> int:
    from libkv.recipes import ServiceRegistry

    with _open(arguments) as store:
        registry = ServiceRegistry(store, arguments.root)
        if arguments.service is None:
            lines = registry.services()
        else:
            lines = [
                f"{member.id} {member.address} {json.dumps(dict(member.metadata), sort_keys=True)}"
                for member in registry.instances(arguments.service)
            ]
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()
    return EXIT_OK


@contextlib.contextmanager
def _recording_interrupts(received: list[float]) -> Iterator[None]:
    """Within the block, each SIGINT appends its time to ``received`` (main thread only).

    Only where SIGINT raises KeyboardInterrupt: a SIGINT ignored by whoever started us
    stays ignored.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield  # signals reach the main thread only, and an ignored one stays ignored
        return

    def record(signum: int, frame: object) -> None:
        received.append(time.monotonic())

    previous = signal.signal(signal.SIGINT, record)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _schemes(arguments: argparse.Namespace) -> int:
    for scheme in libkv.schemes():
        print(scheme)
    sys.stdout.flush()
    return EXIT_OK


def _demo(arguments: argparse.Namespace) -> int:
    from libkv import demo

    demo.run(arguments.url, sys.stdout)
    return EXIT_OK


# -- parsing ---------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    number = int(text)
    if number <= 0:
        raise ValueError(text)
    return number


def _revision(text: str) -> int:
    number = int(text)
    if number < 0:
        raise ValueError(text)
    return number


def _seconds(text: str) -> float:
    return parse_seconds(text)


_positive_int.__name__ = "positive integer"
_revision.__name__ = "revision"
_seconds.__name__ = "number of seconds"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``libkv`` command."""
    parser = _Parser(
        prog="libkv",
        description="Read, write, watch and lock keys in any libkv store.",
        epilog="exit status: 0 ok, 1 not found/conflict/failed, 2 usage or invalid input, "
        "3 store unreachable, 130 interrupted",
    )
    parser.add_argument(
        "--url", help="store URL (default: $LIBKV_URL, else the SQLite file in the data dir)"
    )
    parser.add_argument("--version", action="version", version=f"libkv {libkv.__version__}")
    # --url is also accepted after the command; SUPPRESS keeps the global value otherwise.
    common = _Parser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], int], summary: str) -> Any:
        sub = commands.add_parser(name, parents=[common], help=summary, description=summary)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("get", _get, "print a key's value (raw bytes; newline added on a terminal)")
    sub.add_argument("key")

    sub = command("put", _put, "write a key and print its new version")
    sub.add_argument("key")
    sub.add_argument("value", help="the value; '-' reads it from stdin")
    sub.add_argument("--ttl", type=_seconds, help="delete the key after SECONDS")
    condition = sub.add_mutually_exclusive_group()
    condition.add_argument("--create", action="store_true", help="fail if the key exists")
    condition.add_argument(
        "--version", type=_revision, metavar="N", help="write only if the key is at version N"
    )

    sub = command("rm", _rm, "delete a key (or, recursively, everything under it)")
    sub.add_argument("key")
    mode = sub.add_mutually_exclusive_group()
    mode.add_argument(
        "-r", "--recursive", action="store_true", help="delete the key and everything under it"
    )
    mode.add_argument(
        "--version", type=_revision, metavar="N", help="delete only if the key is at version N"
    )

    sub = command("ls", _ls, "list keys under a prefix (default: all), one per line")
    sub.add_argument("prefix", nargs="?", default="")
    sub.add_argument("--glob", metavar="PATTERN", help="keys matching a glob (*, ?, **, [abc])")
    sub.add_argument("-l", "--long", action="store_true", help="print VERSION SIZE KEY")

    sub = command("watch", _watch, "print changes of a key (or a prefix) until Ctrl-C")
    sub.add_argument("key")
    sub.add_argument("-r", "--recursive", action="store_true", help="watch everything under KEY")
    sub.add_argument(
        "--since", type=_revision, metavar="REVISION", help="every change after REVISION, no INIT"
    )
    sub.add_argument("--json", action="store_true", help="one JSON object per line")
    sub.add_argument("--count", type=_positive_int, metavar="N", help="stop after N events")

    sub = command("lock", _lock, "run a command while holding a lock")
    sub.add_argument("key")
    sub.add_argument("command", nargs="+", metavar="-- COMMAND", help="the command to run")
    sub.add_argument("--ttl", type=_seconds, default=15.0, help="lease ttl in seconds (default 15)")
    sub.add_argument(
        "--timeout", type=_seconds, help="give up (exit 1) if not acquired within SECONDS"
    )

    sub = command("services", _services, "list registered services, or one's instances")
    sub.add_argument("service", nargs="?", help="list this service's instances")
    sub.add_argument("--root", default="services", help="the registry's root (default services)")

    command("schemes", _schemes, "list the store URL schemes usable here")
    command("demo", _demo, "a guided tour of libkv in a temporary namespace")
    return parser


# -- entry point -----------------------------------------------------------------------


def _status(error: BaseException) -> int:
    if isinstance(error, libkv.NotReachableError):
        return EXIT_UNREACHABLE
    if isinstance(error, (ValueError, libkv.NotSupportedError)):
        return EXIT_USAGE  # InvalidKeyError, InvalidURLError, ValueTooLargeError, ...
    return EXIT_FAILED


def _message(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, OSError) and error.strerror and not isinstance(error, libkv.KVError):
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    if not text:
        text = type(error).__name__
    return " ".join(text.split())


class _OneLineFormatter(logging.Formatter):
    """Library log records as single lines: no tracebacks, no secrets on a command line."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    def format(self, record: logging.LogRecord) -> str:
        text = f"libkv: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({_message(record.exc_info[1])})"
        return _scrub(" ".join(text.split()), self.secrets)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``libkv`` command with ``argv`` (default ``sys.argv[1:]``); return its status."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = _OneLineFormatter()
    handler.setFormatter(formatter)
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("libkv")
    logger.addHandler(handler)
    arguments: argparse.Namespace | None = None
    try:
        arguments = build_parser().parse_args(argv)
        formatter.secrets = _secrets(arguments.url)
        run: Callable[[argparse.Namespace], int] = arguments.handler
        return run(arguments)
    except SystemExit as exit_request:  # --help and --version
        code = exit_request.code
        return code if isinstance(code, int) else EXIT_OK if code is None else EXIT_FAILED
    except CommandError as error:
        return _fail(error, error.status, arguments)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("libkv: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # every failure is one line, never a traceback
        return _fail(error, _status(error), arguments)
    finally:
        logger.removeHandler(handler)


def _fail(error: BaseException, status: int, arguments: argparse.Namespace | None) -> int:
    text = _scrub(_message(error), _secrets(getattr(arguments, "url", None)))
    if _status(error) == EXIT_FAILED and not isinstance(
        error, (libkv.KVError, OSError, CommandError)
    ):
        text = f"{type(error).__name__}: {text}"  # an unexpected error: say what it was
    print(f"libkv: error: {text}", file=sys.stderr)
    return status


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
