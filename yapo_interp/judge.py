"""Judging open-ended answers with the paper's rubric (figure 4): an LLM judge over any
OpenAI-compatible endpoint, and an offline heuristic judge that is clearly weaker.

Section 4.2 of the YaPO paper scores open-ended generations with an external LLM judge that reads
the question, the expected (reference) answer and the model's response, and grades four criteria
(figure 4, "Evaluation prompt"):

====================  =====  ===============================================================
criterion             range  anchors
====================  =====  ===============================================================
Language Quality      0-2    0 nonsensical text · 1 many errors · 2 correct, natural language
Factual Accuracy      0-3    0 fabricated customs · 1 mixed · 2 mostly correct · 3 accurate
Cultural Approp.      0-3    0 wrong culture or generic/Western · 1 generic · 2 mostly
                             appropriate · 3 perfect cultural accuracy for the country
Content Quality       0-2    0 repetition, refusal, off-topic · 1 partial · 2 complete
====================  =====  ===============================================================

The total (0-10) is the score ``S_π(x, y*)`` of Definition 1 in the open-ended setting; the
evaluation divides it by 10 before computing PNLG (eq. 5) and RCA (eq. 6).

* ``OpenAIJudge`` posts the rubric prompt to ``{base_url}/chat/completions`` (OpenAI, vLLM,
  llama.cpp, Ollama, ... — anything speaking that API). Base URL, model and key come from
  arguments or the environment (``YAPO_JUDGE_BASE_URL``, ``YAPO_JUDGE_MODEL``,
  ``YAPO_JUDGE_API_KEY``). Transient failures (timeouts, connection errors, HTTP 429/5xx) and
  malformed replies are retried with exponential back-off, within a total *deadline* per request
  (connecting, waiting and retrying included); a reply that still cannot be parsed is recorded
  as a *failure* (``Verdict.ok`` is False, no score), never as a zero. After several requests in
  a row fail, the judge stops sending (the endpoint is down) and records the rest as failures
  at once; the progress bar counts failures, and ``unscored_message`` words the summary that
  makes ``evaluate`` exit non-zero when open-ended scores are missing. Verdicts are
  cached in a JSONL file keyed by ``sha256(judge model, prompt)``, so re-running an evaluation
  makes no second request for a prompt already judged.
* ``parse_verdict`` reads the four scores from a JSON object (``{"language_quality": 2, ...}``,
  several key spellings accepted) or from lines such as ``Language Quality: 2/2`` or
  ``**Factual Accuracy** (0-3): 3``. Scores are *validated*, not clamped: a value outside its
  range (or written over another denominator, ``8/10``) makes the reply malformed, because a
  judge that answers off-scale has misread the rubric and clamping would hide it.
* ``LocalJudge`` runs offline and is **much weaker than an LLM judge**: it applies the same four
  criteria with surface heuristics — the share of letters in the expected script (language), the
  share of repeated word trigrams (content), word overlap with the reference answer (facts), and
  whether the response is closer to the asking country's option than to the other countries' or
  the Western option (culture). It cannot detect fabricated customs or fluent nonsense; use it for
  smoke tests and relative comparisons on the same data, not as a number to report next to the
  paper's. (A 270M model as judge was considered and rejected: it cannot follow the rubric.)
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import socket
import os
import re
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from yapo_interp.errors import UserError
from yapo_interp.io import append_jsonl, read_jsonl

ENV_BASE_URL = "YAPO_JUDGE_BASE_URL"
ENV_MODEL = "YAPO_JUDGE_MODEL"
ENV_API_KEY = "YAPO_JUDGE_API_KEY"


@dataclass(frozen=True)
class Criterion:
    key: str
    title: str
    maximum: int
    aliases: tuple[str, ...]


RUBRIC: tuple[Criterion, ...] = (
    Criterion("language_quality", "Language Quality", 2, ("language", "lang")),
    Criterion("factual_accuracy", "Factual Accuracy", 3, ("fact", "facts", "factual", "accuracy")),
    Criterion("cultural_appropriateness", "Cultural Appropriateness", 3,
              ("cultur", "culture", "cultural")),
    Criterion("content_quality", "Content Quality", 2, ("content",)),
)
MAX_TOTAL = sum(criterion.maximum for criterion in RUBRIC)  # 10

# Figure 4 of the paper, verbatim in content; the last paragraph (how to reply) is ours, since
# the figure does not show one, and any reply format parse_verdict understands is accepted.
JUDGE_PROMPT = """Evaluate this model response (Score 1-10) based on Language Quality, Factual Accuracy, Cultural Appropriateness, and Content Quality.

1) Language Quality (0-2):
- 0: Nonsensical text (made-up words, broken grammar, gibberish)
- 1: Poor language with many errors
- 2: Correct, natural language

2) Factual Accuracy (0-3):
- 0: Fabricated information (fake practices/customs that don't exist)
- 1: Mix of correct and incorrect facts
- 2: Mostly factually correct
- 3: Completely accurate information

3) Cultural Appropriateness (0-3):
- 0: Wrong culture or generic/Western response
- 1: Generic response, not country-specific
- 2: Mostly appropriate for target culture
- 3: Perfect cultural accuracy for specific country

4) Content Quality (0-2):
- 0: Severe issues (excessive repetition, refusal, off-topic)
- 1: Partial answer with problems
- 2: Complete, relevant, well-structured answer

Question: {question}
Expected Answer: {ground_truth}
Model Response ({response_type}): {model_response}

CRITICAL CHECKS
Are cultural practices authentic (not fabricated)? Is content non-repetitive?
Is it culturally specific (not generic)? Does it align with the expected answer?

Reply with only a JSON object with integer scores, for example:
{{"language_quality": 2, "factual_accuracy": 1, "cultural_appropriateness": 2, "content_quality": 1, "total": 6}}"""


class JudgeParseError(ValueError):
    """A judge reply from which the four rubric scores cannot be read (or are off-scale)."""


@dataclass(frozen=True)
class JudgeRequest:
    """What a judge sees for one response. ``language``, ``country`` and ``options`` (pairs of
    (country, option text), the item's MCQ options) are used only by the local judge."""

    question: str
    reference: str
    response: str
    response_type: str = "model response"
    language: str | None = None
    country: str | None = None
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Verdict:
    """A judge's scores for one response, or a recorded failure (``ok`` False, no scores)."""

    judge: str
    ok: bool
    scores: dict[str, float] | None = None
    error: str | None = None
    raw: str | None = None
    cached: bool = False
    attempts: int = 0

    @property
    def total(self) -> float | None:
        """Sum of the four criteria, 0-10 (None for a failure)."""
        return None if self.scores is None else float(sum(self.scores.values()))

    @property
    def normalized(self) -> float | None:
        """The total rescaled to [0, 1], the scale on which PNLG and RCA are computed."""
        total = self.total
        return None if total is None else total / MAX_TOTAL

    def as_record(self) -> dict[str, Any]:
        record = {"judge": self.judge, "judge_ok": self.ok, "judge_total": self.total,
                  "judge_error": self.error, "judge_cached": self.cached,
                  "judge_attempts": self.attempts}
        for criterion in RUBRIC:
            record[f"judge_{criterion.key}"] = (self.scores or {}).get(criterion.key)
        return record


def build_prompt(request: JudgeRequest, template: str = JUDGE_PROMPT) -> str:
    return template.format(question=request.question, ground_truth=request.reference,
                           response_type=request.response_type, model_response=request.response)


# --------------------------------------------------------------------------------------------
# Parsing judge replies
# --------------------------------------------------------------------------------------------

_NUMBER = r"(-?\d+(?:\.\d+)?)"


def _criterion_for_key(key: str) -> Criterion | None:
    normalized = re.sub(r"[^a-z]+", "_", key.lower()).strip("_")
    if normalized in {"total", "score", "overall", "total_score"}:
        return None
    for criterion in RUBRIC:
        if normalized == criterion.key or normalized.replace("_", "") == criterion.key.replace(
                "_", ""):
            return criterion
    for criterion in RUBRIC:
        if any(normalized.startswith(alias) for alias in criterion.aliases):
            return criterion
    return None


def _value(raw: Any, criterion: Criterion) -> float:
    """A score as a float, checking the range (and the denominator of an 'a/b' string)."""
    if isinstance(raw, bool):
        raise JudgeParseError(f"{criterion.key} is a boolean, not a score")
    if isinstance(raw, dict):  # {"score": 2, "reason": ...}
        for name in ("score", "value", "points"):
            if name in raw:
                return _value(raw[name], criterion)
        raise JudgeParseError(f"{criterion.key} is an object without a 'score'")
    if isinstance(raw, str):
        match = re.fullmatch(rf"\s*{_NUMBER}\s*(?:/\s*(\d+))?\s*(?:points?)?\s*", raw)
        if not match:
            raise JudgeParseError(f"{criterion.key}={raw!r} is not a number")
        if match.group(2) is not None and int(match.group(2)) != criterion.maximum:
            raise JudgeParseError(f"{criterion.key} scored out of {match.group(2)}, but the "
                                  f"rubric's scale is 0-{criterion.maximum}")
        raw = float(match.group(1))
    if not isinstance(raw, (int, float)):
        raise JudgeParseError(f"{criterion.key}={raw!r} is not a number")
    value = float(raw)
    if not 0.0 <= value <= criterion.maximum:
        raise JudgeParseError(f"{criterion.key}={value:g} is outside its range "
                              f"0-{criterion.maximum}")
    return value


def _from_mapping(mapping: dict[str, Any]) -> dict[str, float] | None:
    for wrapper in ("scores", "score", "evaluation", "ratings"):
        if isinstance(mapping.get(wrapper), dict):
            mapping = mapping[wrapper]
            break
    scores: dict[str, float] = {}
    for key, raw in mapping.items():
        criterion = _criterion_for_key(str(key))
        if criterion is not None and criterion.key not in scores:
            scores[criterion.key] = _value(raw, criterion)
    return scores if len(scores) == len(RUBRIC) else None


def _json_candidates(text: str) -> list[Any]:
    candidates = []
    stripped = re.sub(r"```(?:json)?", "", text).strip()
    try:
        candidates.append(json.loads(stripped))
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", stripped):
        try:
            value, _ = decoder.raw_decode(stripped[match.start():])
        except json.JSONDecodeError:
            continue
        candidates.append(value)
    return [candidate for candidate in candidates if isinstance(candidate, dict)]


def _line_pattern(criterion: Criterion) -> re.Pattern:
    first, second = criterion.title.split()
    name = rf"{first[:5]}\w*[\s_]*{second}|{criterion.key.replace('_', '[ _]')}"
    return re.compile(
        rf"(?:{name})[\s*_]*(?:\([^)\n]*\))?[\s*_]*[:=\-–—][\s*_]*{_NUMBER}(?:\s*/\s*(\d+))?",
        re.IGNORECASE,
    )


def _from_lines(text: str) -> dict[str, float] | None:
    scores: dict[str, float] = {}
    for criterion in RUBRIC:
        matches = list(_line_pattern(criterion).finditer(text))
        if not matches:
            return None
        last = matches[-1]  # a judge that restates the rubric gives its scores last
        value = last.group(1) + (f"/{last.group(2)}" if last.group(2) else "")
        scores[criterion.key] = _value(value, criterion)
    return scores


def parse_verdict(text: str | None) -> dict[str, float]:
    """The four rubric scores from a judge reply, or ``JudgeParseError`` saying what is wrong.

    Accepts a JSON object (anywhere in the reply, fenced or not, flat or under ``"scores"``)
    or lines like ``Language Quality: 2/2``. A judge's own ``total`` is ignored; the total is
    recomputed from the parts.
    """
    if text is None or not str(text).strip():
        raise JudgeParseError("empty reply")
    problems = []
    for candidate in _json_candidates(text):
        try:
            scores = _from_mapping(candidate)
        except JudgeParseError as error:
            problems.append(str(error))
            continue
        if scores is not None:
            return scores
    scores = _from_lines(text)
    if scores is not None:
        return scores
    if problems:
        raise JudgeParseError(problems[0])
    missing = ", ".join(criterion.title for criterion in RUBRIC)
    raise JudgeParseError(f"no scores for all of {missing} in the reply: {text[:120]!r}")


# --------------------------------------------------------------------------------------------
# Judges
# --------------------------------------------------------------------------------------------


class Judge(ABC):
    """Scores open-ended responses with the rubric of figure 4."""

    name: str = "judge"
    weaker: bool = False  # True for judges whose scores are not comparable with an LLM judge's

    @abstractmethod
    def score(self, request: JudgeRequest) -> Verdict: ...

    def score_many(self, requests: Sequence[JudgeRequest], *, progress: bool = True
                   ) -> list[Verdict]:
        """Verdicts in the order of ``requests``; the progress bar counts the failures."""
        return _with_progress(map(self.score, requests), len(requests), self.name, progress)


def _with_progress(verdicts: Iterable[Verdict], total: int, name: str, progress: bool
                   ) -> list[Verdict]:
    from tqdm.auto import tqdm

    results: list[Verdict] = []
    failed = 0
    with tqdm(total=total, desc=f"judging ({name})", disable=not progress) as bar:
        for verdict in verdicts:
            results.append(verdict)
            if not verdict.ok:
                failed += 1
                bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)
    return results


def unscored_message(verdicts: Sequence[Verdict] | Sequence[dict[str, Any]],
                     judge_name: str = "judge") -> str | None:
    """One line saying how many responses the judge failed to score and why (the most common
    error), or ``None`` when every response has a score. ``verdicts`` are ``Verdict`` objects or
    their records (``judge_ok``, ``judge_error``)."""
    records = [v.as_record() if isinstance(v, Verdict) else v for v in verdicts]
    failed = [r for r in records if not r.get("judge_ok")]
    if not failed:
        return None
    errors = Counter(str(r.get("judge_error") or "no reason recorded") for r in failed)
    cause, count = errors.most_common(1)[0]
    more = f", and {len(errors) - 1} other error(s)" if len(errors) > 1 else ""
    return (f"the {judge_name} left {len(failed)} of {len(records)} open-ended responses "
            f"unscored ({count}x: {cause[:200]}{more}); their scores are missing from the "
            "open-ended results. Fix the judge and rerun the same command: verdicts already "
            "given are cached and reused.")


class JudgeConfigError(UserError):
    """The judge endpoint refuses every request (bad URL, model or key)."""


class _RetryableError(Exception):
    """A failure worth another try: timeout, connection error, HTTP 429/5xx, non-JSON body."""


class _Unreachable(_RetryableError):
    """No answer from the endpoint at all: connection refused or reset, timeout, DNS failure."""


class _RequestRejected(Exception):
    """The endpoint rejected this one request (HTTP 400, 413, 422): retrying cannot help."""


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAIJudge(Judge):
    """An LLM judge behind any OpenAI-compatible ``/v1/chat/completions`` endpoint.

    ``base_url`` is the API root including ``/v1`` (e.g. ``https://api.openai.com/v1``,
    ``http://127.0.0.1:8000/v1``); a URL already ending in ``/chat/completions`` is used as is.
    Each request is tried ``1 + max_retries`` times; between tries it waits ``retry_wait``
    seconds, doubling each time; each try waits at most ``timeout`` seconds for the server, and
    the whole request (tries and waits) at most ``deadline`` seconds. After ``give_up_after``
    requests in a row have failed, the endpoint is taken for down: later requests are not sent
    and are recorded as failures saying so. ``failures`` counts the failed requests of this
    judge. ``cache_path`` (JSONL) stores successful verdicts only, so failures are retried by
    the next run. ``template`` and ``parser`` replace the rubric prompt and the reply parser
    (default: figure 4's rubric, :func:`parse_verdict`) for another rubric, e.g. BiPO's 1-4
    behaviour scale in :mod:`yapo_interp.behaviour`.
    """

    weaker = False

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 timeout: float = 60.0, max_retries: int = 3, retry_wait: float = 2.0,
                 deadline: float = 120.0, give_up_after: int = 4,
                 cache_path: str | Path | None = None, temperature: float = 0.0,
                 max_tokens: int = 512, workers: int = 4, template: str = JUDGE_PROMPT,
                 sleep: Callable[[float], None] = time.sleep,
                 parser: Callable[[str], dict[str, float]] | None = None):
        if not base_url:
            raise UserError(f"No judge endpoint: pass --judge-base-url or set {ENV_BASE_URL} "
                            "(e.g. https://api.openai.com/v1).")
        if not model:
            raise UserError(f"No judge model: pass --judge-model or set {ENV_MODEL}.")
        base_url = base_url.rstrip("/")
        self.url = base_url if base_url.endswith("/chat/completions") else (
            base_url + "/chat/completions")
        if not self.url.startswith(("http://", "https://")):
            raise UserError(f"Judge base URL {base_url!r} must start with http:// or https://.")
        for flag, value in (("--judge-timeout", timeout), ("--judge-deadline", deadline)):
            if not value > 0:
                raise UserError(f"{flag} must be a positive number of seconds, got {value}.")
        if max_retries < 0:
            raise UserError(f"--judge-retries must be 0 or more, got {max_retries}.")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.deadline = deadline
        self.give_up_after = max(1, give_up_after)
        self.failures = 0
        self._failed_in_a_row = 0
        self._last_error = ""
        self.max_retries = max_retries
        self.retry_wait = retry_wait
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.workers = max(1, workers)
        self.template = template
        self.parser = parser or parse_verdict  # another rubric (yapo_interp.behaviour) brings its own
        self.sleep = sleep
        self.name = f"openai:{model}"
        self.requests_made = 0
        self._lock = threading.Lock()
        self.cache_path = Path(cache_path) if cache_path else None
        self._cache: dict[str, dict[str, float]] = {}
        if self.cache_path and self.cache_path.is_file():
            for record in read_jsonl(self.cache_path):
                if record.get("key") and isinstance(record.get("scores"), dict):
                    self._cache[record["key"]] = record["scores"]
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(self.url) else []
        self._opener = urllib.request.build_opener(*handlers)

    @classmethod
    def from_env(cls, base_url: str | None = None, model: str | None = None,
                 api_key: str | None = None, **kwargs: Any) -> OpenAIJudge:
        """Arguments (from flags) win over ``YAPO_JUDGE_BASE_URL/_MODEL/_API_KEY``."""
        return cls(base_url or os.environ.get(ENV_BASE_URL, ""),
                   model or os.environ.get(ENV_MODEL, ""),
                   api_key or os.environ.get(ENV_API_KEY) or None, **kwargs)

    def cache_key(self, prompt: str) -> str:
        payload = json.dumps([self.model, prompt], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def check_reachable(self, timeout: float = 5.0) -> None:
        """Open (and close) a TCP connection to the endpoint: a closed port or an unknown host is
        a one-line ``JudgeConfigError`` before any work is done. Skipped when a proxy would
        carry the requests (the endpoint may be reachable only through it)."""
        parsed = urllib.parse.urlparse(self.url)
        host = parsed.hostname or ""
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if not _is_loopback(self.url) and urllib.request.getproxies().get(parsed.scheme):
            return
        try:
            with socket.create_connection((host, port), timeout=min(timeout, self.timeout)):
                pass
        except OSError as error:
            reason = error.strerror or str(error) or type(error).__name__
            raise JudgeConfigError(
                f"The judge endpoint {self.url} cannot be reached ({reason}): start the server "
                f"or fix --judge-base-url / {ENV_BASE_URL}.") from None

    def _post(self, prompt: str, timeout: float | None = None) -> str:
        body = json.dumps({
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with self._lock:
            self.requests_made += 1
        try:
            with self._opener.open(request, timeout=timeout or self.timeout) as response:
                payload = response.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", errors="replace")[:200]
            if error.code in (401, 403):
                raise JudgeConfigError(
                    f"The judge endpoint {self.url} refused the key (HTTP {error.code}): set "
                    f"{ENV_API_KEY} or --judge-api-key. {detail}") from None
            if error.code == 404:
                raise JudgeConfigError(
                    f"The judge endpoint {self.url} or model {self.model!r} was not found (HTTP "
                    f"404): check {ENV_BASE_URL} (it should end in /v1) and {ENV_MODEL}. "
                    f"{detail}") from None
            if error.code in (408, 409, 425, 429) or error.code >= 500:
                raise _RetryableError(f"HTTP {error.code}: {detail}") from None
            raise _RequestRejected(f"HTTP {error.code} (not retried): {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            raise _Unreachable(f"{type(error).__name__}: {error}") from None
        try:
            data = json.loads(payload)
            content = data["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            raise _RetryableError(f"not a chat completion: {payload[:200]!r}") from None
        if not isinstance(content, str):
            raise _RetryableError(f"reply content is {type(content).__name__}, not text")
        return content

    def score(self, request: JudgeRequest) -> Verdict:
        prompt = build_prompt(request, self.template)
        key = self.cache_key(prompt)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return Verdict(self.name, True, scores=dict(cached), cached=True)
        with self._lock:
            if self._failed_in_a_row >= self.give_up_after:
                self.failures += 1
                return Verdict(self.name, False, attempts=0, error=(
                    f"not sent: {self._failed_in_a_row} judge requests in a row failed, the "
                    f"endpoint {self.url} looks down (last error: {self._last_error})"))
        verdict, unreachable = self._score_prompt(prompt, key)
        with self._lock:
            if not verdict.ok:
                self.failures += 1
            if unreachable:  # only an endpoint that does not answer counts towards giving up
                self._failed_in_a_row += 1
                self._last_error = verdict.error or ""
            else:
                self._failed_in_a_row = 0
        return verdict

    def _score_prompt(self, prompt: str, key: str) -> tuple[Verdict, bool]:
        """Try one prompt until it is scored, rejected, out of tries or past the deadline; also
        say whether it failed because the endpoint did not answer at all."""
        error_message, raw, attempts, unreachable = "", None, 0, False
        started = time.monotonic()
        for attempt in range(self.max_retries + 1):
            if attempt:
                wait = min(self.retry_wait * 2 ** (attempt - 1), 60.0)
                if time.monotonic() - started + wait >= self.deadline:
                    error_message += f" (gave up: the {self.deadline:g} s deadline)"
                    break
                self.sleep(wait)
            remaining = self.deadline - (time.monotonic() - started)
            if remaining <= 0:
                error_message += f" (gave up: the {self.deadline:g} s deadline)"
                break
            attempts += 1
            try:
                raw = self._post(prompt, timeout=min(self.timeout, remaining))
                scores = self.parser(raw)
            except _RetryableError as error:
                error_message, unreachable = str(error), isinstance(error, _Unreachable)
                continue
            except _RequestRejected as error:
                error_message, unreachable = str(error), False
                break
            except JudgeParseError as error:
                error_message, unreachable = f"malformed reply: {error}", False
                continue
            with self._lock:
                self._cache[key] = scores
                if self.cache_path is not None:
                    append_jsonl(self.cache_path, {
                        "key": key, "judge_model": self.model, "scores": scores, "raw": raw,
                        "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            return Verdict(self.name, True, scores=scores, raw=raw, attempts=attempts), False
        return (Verdict(self.name, False, error=error_message, raw=raw, attempts=attempts),
                unreachable)

    def score_many(self, requests: Sequence[JudgeRequest], *, progress: bool = True
                   ) -> list[Verdict]:
        """Verdicts in the order of ``requests``, ``workers`` requests at a time."""
        if self.workers == 1 or len(requests) <= 1:
            return super().score_many(requests, progress=progress)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return _with_progress(pool.map(self.score, requests), len(requests), self.name,
                                  progress)


# --------------------------------------------------------------------------------------------
# The offline heuristic judge
# --------------------------------------------------------------------------------------------

LANGUAGE_SCRIPTS = {"english": "latin", "spanish": "latin", "portuguese": "latin",
                    "arabic": "arabic", "hindi": "devanagari"}
REFUSALS = ("i cannot", "i can't", "i'm sorry", "i am sorry", "as an ai", "lo siento",
            "desculpe", "عذرا", "عذراً", "माफ़ कीजिए")


def letter_script(character: str) -> str:
    """'latin', 'arabic', 'devanagari' or 'other' for a letter."""
    code = ord(character)
    if 0x0600 <= code <= 0x06FF or 0x0750 <= code <= 0x077F or 0xFB50 <= code <= 0xFEFF:
        return "arabic"
    if 0x0900 <= code <= 0x097F:
        return "devanagari"
    if character.isascii() or 0x00C0 <= code <= 0x024F:
        return "latin"
    return "other"


def script_share(text: str, script: str) -> float:
    """Share of the letters of ``text`` (marks included) written in ``script``."""
    letters = [c for c in text if c.isalpha() or unicodedata.category(c).startswith("M")]
    if not letters:
        return 0.0
    return sum(letter_script(c) == script for c in letters) / len(letters)


def dominant_script(text: str) -> str:
    shares = {script: script_share(text, script) for script in ("latin", "arabic", "devanagari")}
    return max(shares, key=shares.get)


def content_words(text: str) -> list[str]:
    """Lower-cased words of three characters or more (a crude stop-word filter)."""
    return [word for word in re.findall(r"\w+", text.lower()) if len(word) >= 3
            and not word.isdigit()]


def overlap(response: str, target: str) -> float:
    """Share of the target's distinct content words that the response contains."""
    target_words = set(content_words(target))
    if not target_words:
        return 0.0
    return len(target_words & set(content_words(response))) / len(target_words)


@dataclass
class LocalJudge(Judge):
    """Offline rubric scores from surface heuristics: **weaker than an LLM judge** (see module
    docstring); its verdicts carry the judge name ``local-heuristic`` so they are never mistaken
    for an LLM judge's."""

    name: str = "local-heuristic (weaker than an LLM judge)"
    weaker: bool = True
    thresholds: dict[str, tuple[float, ...]] = field(default_factory=lambda: {
        "script": (0.4, 0.8),           # language 1 / 2
        "distinct": (0.5, 0.8),         # content 1 / 2 (share of distinct word trigrams)
        "reference": (0.08, 0.2, 0.35),  # facts 1 / 2 / 3 (reference words recalled)
        "culture": (0.3,),              # culture 3 when the own option is recalled this well
    })

    def score(self, request: JudgeRequest) -> Verdict:
        response = request.response.strip()
        words = re.findall(r"\w+", response.lower())
        script = LANGUAGE_SCRIPTS.get(request.language or "") or dominant_script(
            request.reference)
        refusal = any(marker in response.lower() for marker in REFUSALS)

        share = script_share(response, script)
        low, high = self.thresholds["script"]
        language = 0 if len(words) == 0 else 2 if share >= high and len(words) >= 3 else (
            1 if share >= low else 0)

        trigrams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
        distinct = len(set(trigrams)) / len(trigrams) if trigrams else (
            len(set(words)) / len(words) if words else 0.0)
        low, high = self.thresholds["distinct"]
        if len(words) < 3 or refusal or distinct < low:
            content = 0
        else:
            content = 2 if distinct >= high and len(words) >= 8 else 1

        recall = overlap(response, request.reference)
        facts = sum(recall >= cut for cut in self.thresholds["reference"])

        options = dict(request.options)
        if not content_words(response):
            culture = 0  # nothing to judge
        elif request.country and request.country in options:
            own = max(overlap(response, options[request.country]), recall)
            other = max((overlap(response, text) for country, text in options.items()
                         if country != request.country), default=0.0)
            if other > own:
                culture = 0  # closer to another country's or the Western answer
            elif own == 0:
                culture = 1  # generic: close to no country's answer
            else:
                culture = 3 if own >= self.thresholds["culture"][0] else 2
        else:  # without the options, specificity cannot be checked: at most "mostly"
            culture = 2 if recall >= self.thresholds["culture"][0] else 1 if recall > 0 else 0

        scores = {"language_quality": float(language), "factual_accuracy": float(facts),
                  "cultural_appropriateness": float(culture), "content_quality": float(content)}
        return Verdict(self.name, True, scores=scores, attempts=1)


def make_judge(kind: str, *, base_url: str | None = None, model: str | None = None,
               api_key: str | None = None, cache_path: str | Path | None = None,
               **kwargs: Any) -> Judge | None:
    """``"none"`` -> None, ``"local"`` -> LocalJudge, ``"openai"`` -> OpenAIJudge (flags/env)."""
    if kind == "none":
        return None
    if kind == "local":
        return LocalJudge()
    if kind == "openai":
        return OpenAIJudge.from_env(base_url, model, api_key, cache_path=cache_path, **kwargs)
    raise UserError(f"Unknown judge {kind!r}: use none, local or openai.")


__all__ = [
    "ENV_API_KEY", "ENV_BASE_URL", "ENV_MODEL", "JUDGE_PROMPT", "MAX_TOTAL", "RUBRIC", "Judge",
    "JudgeConfigError", "JudgeParseError", "JudgeRequest", "LocalJudge", "OpenAIJudge",
    "Verdict", "build_prompt", "make_judge", "parse_verdict", "unscored_message",
]
