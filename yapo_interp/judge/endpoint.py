"""An LLM judge behind any OpenAI-compatible ``/v1/chat/completions`` endpoint
(:class:`OpenAIJudge`): retries with back-off within a deadline per request, giving up on an
endpoint that does not answer, a reachability check, and a JSONL cache of verdicts."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from yapo_interp.errors import UserError
from yapo_interp.io import append_jsonl, read_jsonl
from yapo_interp.judge.base import Judge, with_progress
from yapo_interp.judge.parse import parse_verdict
from yapo_interp.judge.rubric import (JUDGE_PROMPT, JudgeParseError, JudgeRequest, Verdict,
                                      build_prompt)

ENV_BASE_URL = "YAPO_JUDGE_BASE_URL"
ENV_MODEL = "YAPO_JUDGE_MODEL"
ENV_API_KEY = "YAPO_JUDGE_API_KEY"


class JudgeConfigError(UserError):
    """The judge endpoint refuses every request (bad URL, model or key)."""


class _RetryableError(Exception):
    """A failure worth another try: timeout, connection error, HTTP 429/5xx, non-JSON body."""


class _Unreachable(_RetryableError):
    """No answer from the endpoint at all: connection refused or reset, timeout, DNS failure."""


class _RequestRejected(Exception):
    """The endpoint rejected this one request (HTTP 400, 413, 422): retrying cannot help."""


def _is_loopback(url: str) -> bool:
    """True when ``url``'s host is this machine (no proxy is used for it)."""
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
        """The verdict cache's key of ``prompt``: ``sha256`` of the judge model and the prompt."""
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
        """The verdict on one response: from the cache, else from the endpoint (tries within the
        deadline), else a recorded failure; not sent once the endpoint looks down."""
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
            return with_progress(pool.map(self.score, requests), len(requests), self.name,
                                 progress)
