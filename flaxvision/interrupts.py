"""How a stage ends on SIGINT or SIGTERM, or when the process that started it (DVC) is gone:
one line on stderr and exit status 130 (SIGINT) or 143 (SIGTERM), at any moment.

While a stage computes (`during_work`), a signal raises an exception where the stage is, so
the ``finally`` of every atomic write removes its temporary and the decoder's worker processes
are stopped; `flaxvision.dvc_stage.stage_main` turns it into the line. Before that (the imports,
which take seconds), nothing is half-written, so the process exits at once (`exit_at_once`);
once the stage has ended, with its outputs or its line, signals are ignored while the interpreter
shuts down (`ignore_from_now`), so the exit status is that of what the stage did. A stage whose parent dies gets SIGTERM
(`end_with_parent`): killed DVC leaves no stage writing outputs after it.
"""

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import NoReturn

COMMANDS = ("flaxvision",)  # pyproject.toml's scripts, whose main is a `command`
NOTHING_WRITTEN = "nothing was written"  # what an interrupted command's line says
EXIT_STATUS: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}
MESSAGE: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
PARENT_POLL_SECONDS = 0.2
SHELLS = {"sh", "dash", "bash", "zsh", "ksh"}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as SIGINT raises KeyboardInterrupt (so code that cleans up on one does on both)."""


def ending_line(signum: int, advice: str = "rerun the same command to resume") -> str:
    return f"{MESSAGE[signum]}: {advice}"


def command(main: Callable[[list[str] | None], int]) -> Callable[..., int]:
    """Decorate a command's ``main(argv)`` (predict, export): from the command line (``argv``
    None), SIGINT or SIGTERM while it works ends it with one line and 130 or 143. Its outputs are
    written atomically, so an interrupted command leaves none."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        if argv is not None:  # called from Python: the caller's signals
            return main(argv)
        during_work()
        try:
            return main(argv)
        except KeyboardInterrupt as interrupt:
            ignore_from_now()
            signum = signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT
            print(ending_line(signum, NOTHING_WRITTEN), file=sys.stderr)
            return EXIT_STATUS[signum]
        finally:
            ignore_from_now()

    return wrapper


def exit_at_once(advice: str = "rerun the same command to resume") -> None:
    """From now on, SIGINT and SIGTERM end the process with their line and status, running no more Python."""
    for signum in EXIT_STATUS:
        signal.signal(signum, functools.partial(_exit, advice=advice))


def ignore_from_now() -> None:
    """From now on, ignore SIGINT and SIGTERM: for the interpreter's shutdown once a stage has
    ended (it resets handlers to the default action, which would kill the process unsaid)."""
    for signum in EXIT_STATUS:
        signal.signal(signum, signal.SIG_IGN)


def during_work() -> None:
    """From now on, SIGINT raises KeyboardInterrupt and SIGTERM `Terminated`, in the main thread."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_terminated)


def end_with_parent() -> None:
    """Send this process SIGTERM once its parent process has exited (a thread polls for it); when
    the parent is a shell, once the shell's parent has: DVC runs a stage through $SHELL, and a
    shell that waits on its command (dash) rather than exec it outlives a killed DVC."""
    parent = os.getppid()
    launcher = _parent_of(parent) if _name_of(parent) in SHELLS else None

    def watch() -> None:
        while os.getppid() == parent and (launcher is None or _parent_of(parent) == launcher):
            time.sleep(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that come meanwhile take effect at the end (in the main thread; elsewhere
    nothing changes): for work that threads of a library do, which an exception in the main
    thread would leave running on, printing tracebacks (an Orbax save)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in EXIT_STATUS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            signal.raise_signal(received[0])


@contextlib.contextmanager
def children_without_stderr() -> Iterator[None]:
    """Processes started meanwhile write their stderr to /dev/null. A Ctrl-C reaches the whole
    process group: the parent handles it (it stops its workers and says one line), while each
    worker would print the traceback of its KeyboardInterrupt. Workers report failures in their
    results instead. (Making them ignore SIGINT instead would need this process to ignore it
    too while they start, and lose a Ctrl-C that comes then.)"""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _name_of(pid: int) -> str:
    """The command name of process ``pid`` ('' where /proc does not tell: not Linux, or gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _parent_of(pid: int) -> int | None:
    """The parent of process ``pid`` (None where /proc does not tell)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])  # after "pid (comm) state"


def _exit(signum: int, frame: FrameType | None, advice: str) -> NoReturn:
    with contextlib.suppress(OSError, ValueError):  # stderr closed: its reader (DVC) is gone
        os.write(sys.stderr.fileno(), f"{ending_line(signum, advice)}\n".encode())
    os._exit(EXIT_STATUS[signum])


def _raise_terminated(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated
