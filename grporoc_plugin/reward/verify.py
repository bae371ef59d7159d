"""Final-answer extraction and verification with a hard per-call timeout.

Extraction (pure string work, runs inline):

* ``boxed_in_last_answer_tag`` (paper, §2.2.1): the last complete ``\\boxed{...}`` inside the last closed
  ``<answer>...</answer>`` block; nothing outside the tags counts.
* ``last_boxed_anywhere`` (release, ``prime_math.match_answer``): the last complete ``\\boxed{...}`` / ``\\fbox{...}``
  anywhere in the text.

Verification: a normalised string match first (answers are mostly integers, so most correct answers never reach
sympy), then ``math_verify`` (the library the release uses) in a worker *process*. math_verify's own timeouts use
``signal.alarm``, which only works in a main thread and cannot interrupt sympy stuck in C (``9^{9^{9^9}}`` ignores
signals), so each worker is a long-lived subprocess with a soft ``setitimer`` deadline inside and a hard deadline
outside: a worker that misses the hard deadline is killed and replaced. The reward loop therefore never waits longer
than ``timeout_s`` (plus queueing for a free worker) for one verification.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

logger = logging.getLogger(__name__)

__all__ = [
    "ANSWER_EXTRACTIONS",
    "VerifierPool",
    "VerifyOutcome",
    "extract_answer",
    "ground_truth_candidates",
    "last_boxed",
    "normalize_answer",
]

AnswerExtraction = Literal["boxed_in_last_answer_tag", "last_boxed_anywhere"]
ANSWER_EXTRACTIONS: tuple[str, ...] = ("boxed_in_last_answer_tag", "last_boxed_anywhere")

# Only the last few ``\boxed`` occurrences are tried, each scanned for at most ``max_chars`` characters, so a
# pathological text (100k unclosed ``\boxed{``) costs O(_MAX_BOX_CANDIDATES * max_chars), not O(n^2).
_MAX_BOX_CANDIDATES = 64
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


# ----------------------------------------------------------------------------------------------------- extraction
def last_boxed(text: str, max_chars: int = 1000) -> str | None:
    """Content of the last complete ``\\boxed{...}``/``\\fbox{...}`` in ``text`` (None if there is none)."""
    starts = [m.end() for m in _BOX_RE.finditer(text)][-_MAX_BOX_CANDIDATES:]
    for begin in reversed(starts):
        depth = 1
        stop = min(len(text), begin + max_chars + 1)
        for i in range(begin, stop):
            ch = text[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[begin:i]
        # Unclosed (truncated mid-answer) or longer than max_chars: fall back to the previous occurrence.
    return None


def extract_answer(text: str, mode: AnswerExtraction, max_chars: int = 1000) -> str | None:
    """The final answer of a response under the given extraction ``mode`` (None when there is none)."""
    if mode == "last_boxed_anywhere":
        return last_boxed(text, max_chars)
    if mode == "boxed_in_last_answer_tag":
        end = text.rfind("</answer>")
        if end < 0:
            return None
        start = text.rfind("<answer>", 0, end)
        if start < 0:
            return None
        return last_boxed(text[start + len("<answer>") : end], max_chars)
    raise ValueError(f"answer_extraction must be one of {ANSWER_EXTRACTIONS}, got {mode!r}")


# -------------------------------------------------------------------------------------------------- normalisation
_SPACING = re.compile(r"\\[,!;: ]|\\quad|\\qquad|~|\s+")
_WRAPPERS = re.compile(r"\\(?:left|right|displaystyle)")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def normalize_answer(answer: str) -> str:
    """Canonical string form used by the fast exact-match path (``1 000`` == ``1,000`` == ``1000``)."""
    s = answer.strip().strip("$").strip()
    s = _TEXT.sub(r"\1", s)
    s = _WRAPPERS.sub("", s)
    s = _SPACING.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").rstrip(".")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    if s.startswith("+"):
        s = s[1:]
    return s


def ground_truth_candidates(ground_truth: Any) -> list[str]:
    """Accepted answers as strings; empty when the ground truth is missing or malformed."""
    if ground_truth is None or isinstance(ground_truth, bool):
        return []
    if isinstance(ground_truth, str | int | float):
        values: Sequence[Any] = [ground_truth]
    elif isinstance(ground_truth, list | tuple):
        values = ground_truth
    elif hasattr(ground_truth, "tolist"):  # numpy scalar / array
        listed = ground_truth.tolist()
        values = listed if isinstance(listed, list) else [listed]
    else:
        return []
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = str(value).strip()
        if text:
            out.append(text)
    return out


# -------------------------------------------------------------------------------------------------------- outcome
VerifyStatus = Literal["match", "verified", "no_answer", "timeout", "error"]


@dataclasses.dataclass(frozen=True)
class VerifyOutcome:
    """Result of one verification."""

    correct: bool
    """Whether the answer is equivalent to (one of) the ground truth(s)."""
    status: VerifyStatus
    """match: fast string path; verified: math_verify ran; no_answer; timeout (soft or hard); error."""
    detail: str = ""
    """Why it errored (empty otherwise)."""

    @property
    def timed_out(self) -> bool:
        return self.status == "timeout"

    @property
    def errored(self) -> bool:
        return self.status == "error"


# ---------------------------------------------------------------------------------------------- worker (child side)
class _SoftTimeout(BaseException):
    """Raised by SIGALRM inside the worker; a BaseException so math_verify's ``except Exception`` cannot eat it."""


def _worker_main() -> None:  # pragma: no cover - runs in the child; covered through VerifierPool tests
    """Worker loop: one JSON request per stdin line, one JSON reply per line on the original stdout."""
    import signal

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed by sympy/math_verify goes to stderr, never into the protocol
    try:  # die with the parent even while stuck in C (stdin EOF would never be read)
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - non-glibc platforms: the parent still kills us on timeout/close
        pass
    memory_mb = int(os.environ.get("GRPOROC_VERIFY_MEMORY_MB", "0"))
    if memory_mb > 0:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    from functools import lru_cache

    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" warnings: we time out ourselves
    armed = False

    def on_alarm(signum, frame):
        if armed:
            raise _SoftTimeout

    signal.signal(signal.SIGALRM, on_alarm)

    @lru_cache(maxsize=4096)
    def parse_gold(gold: str):
        return parse("\\boxed{" + gold + "}", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)

    def equivalent(pred: str, golds: list[str]) -> bool:
        target = parse(
            "\\boxed{" + pred + "}",
            extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
            parsing_timeout=None,
        )
        if not target:
            return False
        return any((g := parse_gold(gold)) and verify(g, target, timeout_seconds=None) for gold in golds)

    proto.write('{"ready": true}\n')
    for line in sys.stdin:
        reply: dict[str, Any]
        try:
            req = json.loads(line)
            armed = True
            signal.setitimer(signal.ITIMER_REAL, float(req["soft_timeout_s"]))
            reply = {"id": req["id"], "status": "verified", "correct": bool(equivalent(req["pred"], req["golds"]))}
        except _SoftTimeout:
            reply = {"id": req["id"], "status": "timeout", "correct": False}
        except Exception as exc:  # noqa: BLE001 - a verifier bug scores 0, it never kills the worker
            reply = {"id": req.get("id", -1), "status": "error", "correct": False, "detail": repr(exc)[:300]}
        finally:
            armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        proto.write(json.dumps(reply) + "\n")


# --------------------------------------------------------------------------------------------- worker (parent side)
class _WorkerDied(Exception):
    pass


class _Worker:
    """One verifier subprocess and its line-based pipe protocol."""

    def __init__(self, memory_mb: int) -> None:
        env = dict(os.environ)
        pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
        env["GRPOROC_VERIFY_MEMORY_MB"] = str(memory_mb)
        env.pop("RAY_ADDRESS", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from grporoc_plugin.reward.verify import _worker_main; _worker_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self._buf = b""
        self.ready = False
        self._next_id = 0

    def _readline(self, deadline: float) -> dict | None:
        """Next reply line, or None if the deadline passes first."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _WorkerDied(f"verifier worker exited with code {self.proc.poll()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def wait_ready(self, timeout_s: float) -> None:
        if not self.ready:
            if self._readline(time.monotonic() + timeout_s) is None:
                raise _WorkerDied(f"verifier worker not ready after {timeout_s}s")
            self.ready = True

    def request(self, pred: str, golds: list[str], timeout_s: float, soft_timeout_s: float) -> dict | None:
        """Send one job; the reply, or None when the hard deadline passed."""
        self._next_id += 1
        msg = {"id": self._next_id, "pred": pred, "golds": golds, "soft_timeout_s": soft_timeout_s}
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise _WorkerDied(f"verifier worker pipe closed: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._readline(deadline)
            if reply is None or reply.get("id") == self._next_id:
                return reply
            # a stale reply (cannot happen with one job in flight, but never trust a pipe blindly)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL not delivered
            logger.warning("verifier worker %s did not exit after SIGKILL", self.proc.pid)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


@dataclasses.dataclass
class VerifierStats:
    """Counters since the pool was created (all verifications, including fast-path ones)."""

    calls: int = 0
    fast_path: int = 0
    worker_calls: int = 0
    timeouts: int = 0
    hard_timeouts: int = 0
    errors: int = 0
    respawns: int = 0


class VerifierPool:
    """math_verify in ``num_workers`` reusable subprocesses, each verification with a hard ``timeout_s``.

    Thread-safe; ``verify`` blocks, ``averify`` runs it on the pool's own threads (one per worker) so the event loop
    never blocks. Workers start eagerly (~0.5 s import each, in the background) and are replaced when they time out
    or die.
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float = 5.0,
        *,
        max_answer_chars: int = 1000,
        memory_mb: int = 2048,
        startup_timeout_s: float = 120.0,
        soft_timeout_fraction: float = 0.9,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        # The worker interrupts itself (SIGALRM) at this fraction of timeout_s and stays alive; only code stuck in C
        # (e.g. sympy on gmpy2) reaches the hard deadline, which costs a kill and a respawn.
        self.soft_timeout_s = soft_timeout_fraction * self.timeout_s
        self.max_answer_chars = max_answer_chars
        self.memory_mb = memory_mb
        self.startup_timeout_s = startup_timeout_s
        self.stats = VerifierStats()
        self._lock = threading.Lock()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="grporoc-verify")
        # Spawn from the pool's own long-lived threads: PR_SET_PDEATHSIG fires when the *thread* that forked the
        # child exits, and the caller's thread (a test, a Ray actor's init) may be short-lived.
        for worker in self._executor.map(lambda _: self._spawn(), range(num_workers)):
            self._idle.put(worker)

    def _spawn(self) -> _Worker:
        worker = _Worker(self.memory_mb)
        with self._lock:
            self._all.append(worker)
        return worker

    def _retire(self, worker: _Worker) -> _Worker:
        worker.kill()
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
            self.stats.respawns += 1
        return self._spawn()

    def _count(self, outcome: VerifyOutcome) -> VerifyOutcome:
        with self._lock:
            self.stats.calls += 1
            self.stats.fast_path += outcome.status in ("match", "no_answer")
            self.stats.timeouts += outcome.status == "timeout"
            self.stats.errors += outcome.status == "error"
        return outcome

    def verify(self, answer: str | None, ground_truth: Any) -> VerifyOutcome:
        """Is ``answer`` (an extracted final answer) equivalent to ``ground_truth``? Never raises."""
        golds = ground_truth_candidates(ground_truth)
        if not golds:
            return self._count(VerifyOutcome(False, "error", f"malformed ground truth: {str(ground_truth)[:100]!r}"))
        if answer is None or not answer.strip():
            return self._count(VerifyOutcome(False, "no_answer"))
        if len(answer) > self.max_answer_chars:
            return self._count(VerifyOutcome(False, "error", f"answer longer than {self.max_answer_chars} chars"))
        pred = normalize_answer(answer)
        if any(pred == normalize_answer(g) for g in golds):
            return self._count(VerifyOutcome(True, "match"))
        return self._count(self._verify_in_worker(answer, golds))

    def _verify_in_worker(self, answer: str, golds: list[str]) -> VerifyOutcome:
        if self._closed:
            return VerifyOutcome(False, "error", "verifier pool is closed")
        worker = self._idle.get()
        try:
            worker.wait_ready(self.startup_timeout_s)
            reply = worker.request(answer, golds, self.timeout_s, self.soft_timeout_s)
        except _WorkerDied as exc:
            self._idle.put(self._retire(worker))
            return VerifyOutcome(False, "error", str(exc))
        except Exception as exc:  # noqa: BLE001 - e.g. a non-JSON line: treat the worker as broken
            self._idle.put(self._retire(worker))
            return VerifyOutcome(False, "error", repr(exc)[:300])
        with self._lock:
            self.stats.worker_calls += 1
        if reply is None:  # hard deadline: the worker is stuck (typically sympy inside C); replace it
            with self._lock:
                self.stats.hard_timeouts += 1
            self._idle.put(self._retire(worker))
            return VerifyOutcome(False, "timeout", f"hard timeout after {self.timeout_s}s")
        self._idle.put(worker)
        status = reply.get("status")
        if status == "verified":
            return VerifyOutcome(bool(reply.get("correct")), "verified")
        if status == "timeout":
            return VerifyOutcome(False, "timeout", f"soft timeout after {self.soft_timeout_s:.2f}s")
        return VerifyOutcome(False, "error", str(reply.get("detail", "unknown verifier error")))

    async def averify(self, answer: str | None, ground_truth: Any) -> VerifyOutcome:
        """``verify`` off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.verify, answer, ground_truth)

    def warm_up(self) -> None:
        """Block until every worker has imported math_verify (optional; the first call waits otherwise)."""
        workers = []
        try:
            while True:
                workers.append(self._idle.get_nowait())
        except queue.Empty:
            pass
        for worker in workers:
            try:
                worker.wait_ready(self.startup_timeout_s)
            except _WorkerDied:
                worker = self._retire(worker)
            self._idle.put(worker)

    def close(self) -> None:
        """Kill every worker; later verifications that need a worker return ``error``."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            workers, self._all = list(self._all), []
        for worker in workers:
            worker.kill()

    def __del__(self) -> None:  # best effort; workers also die with the parent (PR_SET_PDEATHSIG)
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
