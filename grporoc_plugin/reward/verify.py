"""Final-answer extraction and verification: a fast path, a verdict cache, and math_verify with a hard timeout.

Extraction (pure string work, runs inline) reads whatever text the caller passes; which text that is (the model's own
tokens, or the whole response) is the reward manager's business (:mod:`grporoc_plugin.reward.manager`):

* ``boxed_in_last_answer_tag`` (paper, §2.2.1): the last complete ``\\boxed{...}`` inside the last closed
  ``<answer>...</answer>`` block; nothing outside the tags counts.
* ``last_boxed_anywhere`` / ``last_boxed_full_text`` (release, ``prime_math.match_answer``): the last complete
  ``\\boxed{...}`` / ``\\fbox{...}`` anywhere in the text.

Not reproduced from the release: its verifier was ``prime_math`` OR math_verify, where ``prime_math`` falls back to
"answer is" / "=" patterns when there is no box and math_verify ran its own extraction over the whole text. Here
one extracted box is verified by math_verify alone, in every mode.

Verification gives math_verify's verdict (:func:`math_verify_equivalent`, the library the release uses). Most
verdicts need no math_verify call: :mod:`grporoc_plugin.reward.fastpath` decides plain numbers and normalised exact
matches exactly as math_verify would, and a cache keyed by (answer, ground truths) serves repeats (answers repeat
within a group). The rest runs in a worker *process*: math_verify's own timeouts use ``signal.alarm``, which only
works in a main thread and cannot interrupt sympy stuck in C, so each worker is a long-lived subprocess with a soft
``setitimer`` deadline inside and a hard deadline outside: a worker that misses the hard deadline is killed and
replaced. The reward loop therefore never waits longer than ``timeout_s`` (plus queueing for a free worker) for one
verification.
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

from grporoc_plugin.reward.fastpath import VerdictCache, fast_rules_supported, fast_verdict

logger = logging.getLogger(__name__)

__all__ = [
    "ANSWER_EXTRACTIONS",
    "VerifierPool",
    "VerifierStats",
    "VerifyOutcome",
    "extract_answer",
    "ground_truth_candidates",
    "last_boxed",
    "math_verify_equivalent",
]

AnswerExtraction = Literal["boxed_in_last_answer_tag", "last_boxed_anywhere", "last_boxed_full_text"]
ANSWER_EXTRACTIONS: tuple[str, ...] = ("boxed_in_last_answer_tag", "last_boxed_anywhere", "last_boxed_full_text")

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
    if mode in ("last_boxed_anywhere", "last_boxed_full_text"):
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


# ---------------------------------------------------------------------------------------------- ground truths
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
VerifyStatus = Literal["fast", "cached", "verified", "no_answer", "timeout", "error"]


@dataclasses.dataclass(frozen=True)
class VerifyOutcome:
    """Result of one verification."""

    correct: bool
    """Whether the answer is equivalent to (one of) the ground truth(s)."""
    status: VerifyStatus
    """fast: decided by the fast path; cached: a verdict seen before; verified: math_verify ran; no_answer;
    timeout (soft or hard); error (malformed input, worker failure, closed pool)."""
    detail: str = ""
    """Why it timed out or errored (empty otherwise)."""

    @property
    def timed_out(self) -> bool:
        return self.status == "timeout"

    @property
    def errored(self) -> bool:
        return self.status == "error"


# ------------------------------------------------------------------------------------------------ the reference
_MATH_VERIFY: dict[str, Any] = {}


def _math_verify() -> dict[str, Any]:
    if not _MATH_VERIFY:
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

        logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled": callers time out themselves
        _MATH_VERIFY.update(
            parse=parse,
            verify=verify,
            gold_config=[LatexExtractionConfig()],
            pred_config=[LatexExtractionConfig(), ExprExtractionConfig()],
        )
    return _MATH_VERIFY


def parse_gold(gold: str) -> list:
    """math_verify's parse of a ground truth (LaTeX extraction of ``\\boxed{gold}``)."""
    mv = _math_verify()
    return mv["parse"]("\\boxed{" + gold + "}", extraction_config=mv["gold_config"], parsing_timeout=None)


def math_verify_equivalent(pred: str, golds: Sequence[str], parse_gold=parse_gold) -> bool:
    """The reference verdict: is the extracted answer ``pred`` equivalent to any of ``golds`` per math_verify?

    No timeout of its own (math_verify's is ``signal.alarm``-based); callers bound it (the worker's soft/hard
    deadlines). ``parse_gold`` may be a cached version of :func:`parse_gold`.
    """
    mv = _math_verify()
    target = mv["parse"]("\\boxed{" + pred + "}", extraction_config=mv["pred_config"], parsing_timeout=None)
    if not target:
        return False
    return any((g := parse_gold(gold)) and mv["verify"](g, target, timeout_seconds=None) for gold in golds)


# ---------------------------------------------------------------------------------------------- worker (child side)
class _SoftTimeout(BaseException):
    """Raised by SIGALRM inside the worker; a BaseException so math_verify's ``except Exception`` cannot eat it."""


def _worker_main() -> None:  # pragma: no cover - runs in the child; covered through VerifierPool tests
    """Worker loop: one JSON request per stdin line, one JSON reply per line on the original stdout."""
    import signal
    from functools import lru_cache

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

    _math_verify()
    armed = False

    def on_alarm(signum, frame):
        if armed:
            raise _SoftTimeout

    signal.signal(signal.SIGALRM, on_alarm)
    cached_parse_gold = lru_cache(maxsize=4096)(parse_gold)

    proto.write('{"ready": true}\n')
    for line in sys.stdin:
        reply: dict[str, Any]
        req: dict[str, Any] = {}
        try:
            req = json.loads(line)
            armed = True
            signal.setitimer(signal.ITIMER_REAL, float(req["soft_timeout_s"]))
            correct = math_verify_equivalent(req["pred"], req["golds"], cached_parse_gold)
            reply = {"id": req["id"], "status": "verified", "correct": bool(correct)}
        except _SoftTimeout:
            reply = {"id": req.get("id", -1), "status": "timeout", "correct": False}
        except Exception as exc:  # noqa: BLE001 - a verifier bug scores 0, it never kills the worker
            reply = {"id": req.get("id", -1), "status": "error", "correct": False, "detail": repr(exc)[:300]}
        finally:
            armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        proto.write(json.dumps(reply) + "\n")


# --------------------------------------------------------------------------------------------- worker (parent side)
class _WorkerDied(Exception):
    pass


class _PoolClosed(Exception):
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
        except (BrokenPipeError, OSError, ValueError) as exc:  # ValueError: pipe closed by kill()
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
    """Counters since the pool was created; every verification counts once in ``calls`` and in one of
    ``no_answer``, ``rejected``, ``cache_hits``, ``fast_path``, ``worker_calls``."""

    calls: int = 0
    #: no (or a blank) answer: wrong without verification
    no_answer: int = 0
    #: malformed ground truth, answer too long, pool closed: ``error`` without verification
    rejected: int = 0
    #: verdicts served from the (answer, ground truths) cache
    cache_hits: int = 0
    #: verdicts decided by the fast-path rules (no math_verify call)
    fast_path: int = 0
    #: verifications sent to a math_verify worker (whatever the outcome)
    worker_calls: int = 0
    timeouts: int = 0
    hard_timeouts: int = 0
    errors: int = 0
    respawns: int = 0

    @property
    def without_math_verify(self) -> int:
        """Verdicts (on a real answer) given without calling math_verify: cache hits + fast-path decisions."""
        return self.cache_hits + self.fast_path


class VerifierPool:
    """Answer verification: fast path + verdict cache in front of math_verify in ``num_workers`` reusable
    subprocesses, each verification with a hard ``timeout_s``.

    Thread-safe. ``verify`` blocks; ``averify`` decides what it can on the event loop (cache, plain numbers: a few
    microseconds) and runs the rest on the pool's own threads (one per worker), so the loop never blocks. Workers
    start eagerly (~0.5 s import each, in the background) and are replaced when they time out or die. Every worker
    is started by one long-lived spawner thread owned by the pool: ``PR_SET_PDEATHSIG`` fires when the *thread* that
    forked a child exits, so no caller's short-lived thread can take a worker down with it, and ending the spawner
    on :meth:`close` kills any worker that a concurrent respawn might have started.

    ``fast_path=False`` sends every answer to math_verify (no rules, no cache): the reference behaviour.
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
        fast_path: bool = True,
        cache_size: int = 65536,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.timeout_s = float(timeout_s)
        # The worker interrupts itself (SIGALRM) at this fraction of timeout_s and stays alive; only code stuck in C
        # (e.g. sympy on gmpy2) reaches the hard deadline, which costs a kill and a respawn.
        self.soft_timeout_s = soft_timeout_fraction * self.timeout_s
        self.max_answer_chars = max_answer_chars
        self.memory_mb = memory_mb
        self.startup_timeout_s = startup_timeout_s
        self.fast_path = bool(fast_path)
        self.rules = False  # the fast-path rules, on the library versions they were checked against
        if self.fast_path:
            self.rules, why = fast_rules_supported()
            if not self.rules:
                logger.warning("grporoc verifier: fast-path rules off (verdict cache still on): %s", why)
        self.cache = VerdictCache(cache_size if self.fast_path else 0)
        self.stats = VerifierStats()
        self._lock = threading.Lock()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="grporoc-verify")
        self._spawn_requests: queue.Queue = queue.Queue()
        self._spawner = threading.Thread(target=self._spawn_loop, name="grporoc-verify-spawner", daemon=True)
        self._spawner.start()
        for _ in range(num_workers):
            self._idle.put(self._spawn())

    # ------------------------------------------------------------------------------------------- worker lifecycle
    def _spawn_loop(self) -> None:
        """The only thread that forks workers (see the class docstring); exits on ``None``."""
        while (request := self._spawn_requests.get()) is not None:
            done, box = request
            try:
                box.append(_Worker(self.memory_mb))
            except BaseException as exc:  # noqa: BLE001 - handed to the requesting thread
                box.append(exc)
            done.set()

    def _spawn(self) -> _Worker:
        done, box = threading.Event(), []
        with self._lock:
            if self._closed:
                raise _PoolClosed("verifier pool is closed")
            self._spawn_requests.put((done, box))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        worker = box[0]
        with self._lock:
            if not self._closed:
                self._all.append(worker)
                return worker
        worker.kill()  # closed while it was being started
        raise _PoolClosed("verifier pool is closed")

    def _retire(self, worker: _Worker) -> None:
        """Kill ``worker`` and put a fresh one in the idle queue (none once the pool is closed)."""
        worker.kill()
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
            self.stats.respawns += 1
        try:
            self._idle.put(self._spawn())
        except _PoolClosed:
            pass
        except Exception:  # noqa: BLE001 - fork failed (EAGAIN, ENOMEM): the pool shrinks, calls still get verdicts
            logger.exception("grporoc verifier: could not start a replacement worker")

    def _checkout(self) -> _Worker:
        """An idle worker; raises _PoolClosed once the pool is closed (never blocks past close())."""
        while True:
            if self._closed:
                raise _PoolClosed("verifier pool is closed")
            try:
                return self._idle.get(timeout=0.5)
            except queue.Empty:
                with self._lock:
                    starved = not self._all and not self._closed
                if starved:  # every replacement failed to start: try once more rather than wait forever
                    self._idle.put(self._spawn())

    # ------------------------------------------------------------------------------------------------ verification
    def _count(self, outcome: VerifyOutcome, route: str) -> VerifyOutcome:
        with self._lock:
            stats = self.stats
            stats.calls += 1
            setattr(stats, route, getattr(stats, route) + 1)
            stats.timeouts += outcome.status == "timeout"
            stats.errors += outcome.status == "error"
        return outcome

    def _quick(self, answer: str | None, golds: list[str], ground_truth: Any) -> VerifyOutcome | None:
        """Everything decidable in microseconds: input checks, the cache, the raw-number rule; None otherwise."""
        if not golds:
            outcome = VerifyOutcome(False, "error", f"malformed ground truth: {str(ground_truth)[:100]!r}")
            return self._count(outcome, "rejected")
        if answer is None or not answer.strip():
            return self._count(VerifyOutcome(False, "no_answer"), "no_answer")
        if len(answer) > self.max_answer_chars:
            outcome = VerifyOutcome(False, "error", f"answer longer than {self.max_answer_chars} chars")
            return self._count(outcome, "rejected")
        if not self.fast_path:
            return None
        key = (answer, tuple(golds))
        cached = self.cache.get(key)
        if cached is not None:
            return self._count(VerifyOutcome(cached, "cached"), "cache_hits")
        verdict = fast_verdict(answer, golds, normalize=False) if self.rules else None
        if verdict is None:
            return None
        self.cache.put(key, verdict)
        return self._count(VerifyOutcome(verdict, "fast"), "fast_path")

    def _slow(self, answer: str, golds: list[str]) -> VerifyOutcome:
        """The normalising rules, then math_verify in a worker (blocking)."""
        key = (answer, tuple(golds))
        if self.rules:
            verdict = fast_verdict(answer, golds)
            if verdict is not None:
                self.cache.put(key, verdict)
                return self._count(VerifyOutcome(verdict, "fast"), "fast_path")
        try:
            outcome = self._verify_in_worker(answer, golds)
        except _PoolClosed as exc:
            return self._count(VerifyOutcome(False, "error", str(exc)), "rejected")
        if outcome.status == "verified":  # timeouts and errors are not verdicts: the next identical answer retries
            self.cache.put(key, outcome.correct)
        return self._count(outcome, "worker_calls")

    def verify(self, answer: str | None, ground_truth: Any) -> VerifyOutcome:
        """Is ``answer`` (an extracted final answer) equivalent to ``ground_truth``? Never raises."""
        golds = ground_truth_candidates(ground_truth)
        quick = self._quick(answer, golds, ground_truth)
        return quick if quick is not None else self._slow(answer, golds)

    async def averify(self, answer: str | None, ground_truth: Any) -> VerifyOutcome:
        """``verify`` without blocking the event loop; never raises (a closed pool gives ``error``)."""
        golds = ground_truth_candidates(ground_truth)
        quick = self._quick(answer, golds, ground_truth)
        if quick is not None:
            return quick
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._slow, answer, golds)
        except RuntimeError as exc:  # executor shut down by close()
            return self._count(VerifyOutcome(False, "error", f"verifier pool is closed ({exc})"), "rejected")

    def _verify_in_worker(self, answer: str, golds: list[str]) -> VerifyOutcome:
        """math_verify in an idle worker; raises _PoolClosed when the pool is closed before one is free."""
        try:
            worker = self._checkout()
        except _PoolClosed:
            raise
        except Exception as exc:  # noqa: BLE001 - no worker could be started at all
            return VerifyOutcome(False, "error", f"no verifier worker: {exc!r}"[:300])
        try:
            worker.wait_ready(self.startup_timeout_s)
            reply = worker.request(answer, golds, self.timeout_s, self.soft_timeout_s)
        except _WorkerDied as exc:
            self._retire(worker)
            return VerifyOutcome(False, "error", str(exc))
        except Exception as exc:  # noqa: BLE001 - e.g. a non-JSON line: treat the worker as broken
            self._retire(worker)
            return VerifyOutcome(False, "error", repr(exc)[:300])
        if reply is None:  # hard deadline: the worker is stuck (typically sympy inside C); replace it
            with self._lock:
                self.stats.hard_timeouts += 1
            self._retire(worker)
            return VerifyOutcome(False, "timeout", f"hard timeout after {self.timeout_s}s")
        self._idle.put(worker)
        status = reply.get("status")
        if status == "verified":
            return VerifyOutcome(bool(reply.get("correct")), "verified")
        if status == "timeout":
            return VerifyOutcome(False, "timeout", f"soft timeout after {self.soft_timeout_s:.2f}s")
        return VerifyOutcome(False, "error", str(reply.get("detail", "unknown verifier error")))

    # ------------------------------------------------------------------------------------------------- lifecycle
    def warm_up(self) -> None:
        """Block until every idle worker has imported math_verify (optional; the first call waits otherwise)."""
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
                self._retire(worker)
                continue
            self._idle.put(worker)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live worker subprocesses."""
        with self._lock:
            return [w.proc.pid for w in self._all]

    def close(self) -> None:
        """Kill every worker and stop the pool's threads; later verifications that need a worker return
        ``error`` (cached and fast-path verdicts still work). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers, self._all = list(self._all), []
            self._spawn_requests.put(None)
        self._executor.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.kill()

    def __del__(self) -> None:  # best effort; workers also die with the spawner thread (PR_SET_PDEATHSIG)
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
