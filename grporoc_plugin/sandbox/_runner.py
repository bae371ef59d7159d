"""Executes one snippet with the release tool's semantics (stdlib only; runs inside the sandbox).

Semantics of rStar2-Agent's ``PersistentExecutor`` (code_judge_utils.py): the snippet runs as ``__main__``; if its last
statement is an expression whose value is not None, ``repr(value)`` is printed (IPython-style); an exception prints
``"<Type> at line N: <msg>\\n  <source line>"`` to stderr and exits with code 1. The exception type name is also written
to the status file descriptor (when given) so the supervisor can tell a ``MemoryError`` from other failures.

Used two ways: imported by the fork server (``run_snippet`` in a forked child) and run as a script by the
fresh-subprocess backend: ``python -I _runner.py CODE_FILE [STATUS_FD]``.
"""

from __future__ import annotations

import ast
import os
import sys
import traceback

FILENAME = "<string>"


def _error_line(exc: BaseException) -> int:
    """Line of the deepest traceback frame inside the snippet (or the SyntaxError's line); -1 when unknown."""
    if isinstance(exc, SyntaxError) and exc.filename == FILENAME and exc.lineno:
        return exc.lineno
    line = -1
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def format_error(exc: BaseException, code: str) -> str:
    """``"<Type> at line N: <msg>\\n  <line>"`` as the release prints it (``"<Type>: <msg>"`` without a line)."""
    name = type(exc).__name__
    msg = exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc)
    lineno = _error_line(exc)
    lines = code.splitlines()
    if 0 < lineno <= len(lines):
        return f"{name} at line {lineno}: {msg}\n  {lines[lineno - 1]}"
    return f"{name}: {msg}"


def _report(status_fd: int | None, text: str) -> None:
    if status_fd is None:
        return
    try:
        os.write(status_fd, text.encode("utf-8", "replace")[:200])
    except OSError:
        pass


def run_snippet(code: str, status_fd: int | None = None) -> int:
    """Runs ``code`` in a fresh ``__main__`` namespace; returns the process exit code (0 ok, 1 exception)."""
    namespace: dict = {"__name__": "__main__", "__file__": FILENAME, "__builtins__": __builtins__}
    try:
        tree = ast.parse(code, filename=FILENAME)
        last_expr = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last_expr = ast.Expression(tree.body.pop().value)
        # Compiling the split AST (not re-joined source text) keeps the snippet's own line numbers.
        exec(compile(tree, FILENAME, "exec"), namespace)
        if last_expr is not None:
            value = eval(compile(last_expr, FILENAME, "eval"), namespace)
            if value is not None:
                print(repr(value))
    except SystemExit as exc:
        # sys.exit(n) behaves as in a script: None/0 -> 0, int -> that code, anything else -> printed, code 1.
        code_ = exc.code
        if code_ is None:
            return 0
        if isinstance(code_, int):
            _report(status_fd, "SystemExit")
            return code_ & 0xFF
        print(code_, file=sys.stderr)
        _report(status_fd, "SystemExit")
        return 1
    except BaseException as exc:  # noqa: BLE001 - everything the snippet raises is its error, reported as text
        _report(status_fd, type(exc).__name__)
        try:
            print(format_error(exc, code), file=sys.stderr)
        except BaseException:  # noqa: BLE001 - e.g. MemoryError while formatting, or stderr closed by the snippet
            try:
                traceback.print_exception(type(exc), exc, None, file=sys.stderr)
            except BaseException:  # noqa: BLE001
                pass
        return 1
    return 0


def flush_std() -> None:
    """Flushes stdout/stderr, ignoring a stream the snippet closed or broke."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - closed/broken stream: the output is simply lost
            pass


def main(argv: list[str]) -> None:
    """Script mode for the fresh-subprocess backend: code from a file, exit via os._exit like the release."""
    with open(argv[1], encoding="utf-8") as f:
        code = f.read()
    status_fd = int(argv[2]) if len(argv) > 2 else None
    os.unlink(argv[1])
    sys.argv = [FILENAME]
    rc = run_snippet(code, status_fd)
    flush_std()
    os._exit(rc)


if __name__ == "__main__":
    main(sys.argv)
