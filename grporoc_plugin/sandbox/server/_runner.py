"""Executes one snippet with the release tool's semantics (stdlib only; runs inside the sandbox).

Semantics of rStar2-Agent's ``PersistentExecutor`` (code_judge_utils.py): the snippet runs as ``__main__``; if its last
statement is an expression whose value is not None, ``repr(value)`` is printed (IPython-style); an exception prints
``"<Type> at line N: <msg>\\n  <source line>"`` to stderr and exits with code 1. The exception type name is also written
to the report file descriptor (when given) so the supervisor can tell a ``MemoryError`` from other failures (see
``_status``: that report can only ever choose between those two error statuses).

Everything here runs inside the snippet's own process, after its code: it must survive whatever the snippet did to the
interpreter (objects whose ``__str__`` raises, closed or replaced streams) and always end in an exit code, never in an
exception escaping to the caller.

Used two ways: imported by the fork server (``run_snippet`` in the run's process) and run as a script by the
fresh-subprocess backend: ``python -I _runner.py CODE_FILE [REPORT_FD]``.
"""

from __future__ import annotations

import ast
import os
import sys
import traceback

FILENAME = "<string>"


def _error_line(exc: BaseException) -> int:
    """Line of the deepest traceback frame inside the snippet (or the SyntaxError's line); -1 when unknown."""
    if isinstance(exc, SyntaxError) and exc.filename == FILENAME and isinstance(exc.lineno, int):
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


def _report(report_fd: int | None, text: str) -> None:
    if report_fd is None:
        return
    try:
        os.write(report_fd, text.encode("utf-8", "replace")[:64])
    except BaseException:  # noqa: BLE001 - closed or replaced by the snippet: the report is simply absent
        pass


def _print_stderr(text: object) -> None:
    """print(text, file=sys.stderr), falling back to a placeholder when ``str(text)`` itself raises."""
    try:
        print(text, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - e.g. an object whose __str__ raises, or a stream the snippet broke
        try:
            print(f"<unprintable {type(text).__name__} object>", file=sys.stderr)
        except BaseException:  # noqa: BLE001
            pass


def _system_exit(exc: SystemExit, report_fd: int | None) -> int:
    """sys.exit(n) as in a script: None -> 0, an int -> that code, anything else -> printed to stderr, code 1."""
    value = exc.code
    if value is None:
        return 0
    _report(report_fd, "SystemExit")
    if isinstance(value, int):
        return value & 0xFF
    _print_stderr(value)
    return 1


def _exception(exc: BaseException, code: str, report_fd: int | None) -> int:
    _report(report_fd, type(exc).__name__)
    try:
        print(format_error(exc, code), file=sys.stderr)
    except BaseException:  # noqa: BLE001 - e.g. MemoryError while formatting, or a __str__ that raises
        try:
            traceback.print_exception(type(exc), exc, None, file=sys.stderr)
        except BaseException:  # noqa: BLE001
            _print_stderr(f"<{type(exc).__name__} (unprintable)>")
    return 1


def run_snippet(code: str, report_fd: int | None = None) -> int:
    """Runs ``code`` in a fresh ``__main__`` namespace; returns the process exit code (0 ok, else the error's)."""
    namespace: dict = {"__name__": "__main__", "__file__": FILENAME, "__builtins__": __builtins__}
    try:
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
            return _system_exit(exc, report_fd)
        except BaseException as exc:  # noqa: BLE001 - everything the snippet raises is its error, reported as text
            return _exception(exc, code, report_fd)
    except BaseException:  # noqa: BLE001 - the error path itself failed (e.g. a second KeyboardInterrupt)
        return 1
    return 0


def warm_up() -> None:
    """Runs the snippet path once on a constant snippet, in a process that runs are later forked from: CPython builds
    its AST node types on the first parse of an interpreter (about 100 types, ~1 ms); done here, every run inherits
    them instead of building them again."""
    tree = ast.parse("x = 1\nx", filename=FILENAME)
    last_expr = ast.Expression(tree.body.pop().value)
    namespace: dict = {"__name__": "__warm_up__", "__builtins__": __builtins__}
    exec(compile(tree, FILENAME, "exec"), namespace)
    repr(eval(compile(last_expr, FILENAME, "eval"), namespace))


def flush_std() -> None:
    """Flushes stdout/stderr, ignoring a stream the snippet closed or broke."""
    for name in ("stdout", "stderr"):
        try:
            getattr(sys, name).flush()
        except BaseException:  # noqa: BLE001 - closed/broken/replaced stream: the output is simply lost
            pass


def main(argv: list[str]) -> None:
    """Script mode for the fresh-subprocess backend: code from a file, exit via os._exit like the release."""
    rc = 1
    try:
        with open(argv[1], encoding="utf-8", errors="surrogatepass") as f:
            code = f.read()
        report_fd = int(argv[2]) if len(argv) > 2 else None
        os.unlink(argv[1])
        sys.argv = [FILENAME]
        rc = run_snippet(code, report_fd)
        flush_std()
    finally:
        os._exit(rc)


if __name__ == "__main__":
    main(sys.argv)
