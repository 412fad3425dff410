"""The rubric judge: reply parsing, the OpenAI-compatible HTTP judge against a fake server on
127.0.0.1 (success, retries, recorded failures, cache), and the offline heuristic judge."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from yapo_interp.errors import UserError
from yapo_interp.judge import (JUDGE_PROMPT, MAX_TOTAL, JudgeConfigError, JudgeParseError,
                               JudgeRequest, LocalJudge, OpenAIJudge, build_prompt, make_judge,
                               parse_verdict)

GOOD = ('{"language_quality": 2, "factual_accuracy": 3, "cultural_appropriateness": 2, '
        '"content_quality": 1, "total": 8}')
REQUEST = JudgeRequest(question="What do we eat for breakfast on Friday?",
                       reference="Ful medames with bread, falafel and pickles.",
                       response="We eat ful and taameya with baladi bread.",
                       response_type="localized")


# --------------------------------------------------------------------------------------------
# parse_verdict
# --------------------------------------------------------------------------------------------


def test_parse_json_reply():
    assert parse_verdict(GOOD) == {"language_quality": 2, "factual_accuracy": 3,
                                   "cultural_appropriateness": 2, "content_quality": 1}


def test_parse_fenced_nested_and_prose_wrapped_json():
    text = ('Here is my evaluation:\n```json\n{"scores": {"Language Quality": "2/2", '
            '"Factual Accuracy": 1, "Cultural Appropriateness": {"score": 0}, '
            '"Content Quality": 2}}\n```\nThanks.')
    assert parse_verdict(text) == {"language_quality": 2, "factual_accuracy": 1,
                                   "cultural_appropriateness": 0, "content_quality": 2}


def test_parse_rubric_style_lines_taking_the_final_scores():
    text = ("1) Language Quality (0-2): 2/2 - natural\n"
            "**Factual Accuracy**: 2\n"
            "Cultural Appropriateness (0–3): 3\n"
            "4) Content Quality: 1/2\n"
            "Total: 8/10")
    assert parse_verdict(text) == {"language_quality": 2, "factual_accuracy": 2,
                                   "cultural_appropriateness": 3, "content_quality": 1}


@pytest.mark.parametrize("reply, problem", [
    ("The answer is good.", "no scores"),
    ("", "empty"),
    ('{"language_quality": 2, "factual_accuracy": 3, "content_quality": 1}', "no scores"),
    ('{"language_quality": 3, "factual_accuracy": 3, "cultural_appropriateness": 2, '
     '"content_quality": 1}', "outside its range"),
    ("Language Quality: 8/10\nFactual Accuracy: 2\nCultural Appropriateness: 2\n"
     "Content Quality: 2", "out of 10"),
    ("Language Quality: -1\nFactual Accuracy: 2\nCultural Appropriateness: 2\n"
     "Content Quality: 2", "outside its range"),
])
def test_malformed_or_off_scale_replies_are_rejected_not_clamped(reply, problem):
    with pytest.raises(JudgeParseError, match=problem):
        parse_verdict(reply)


def test_prompt_is_figure_4_with_the_fields_filled():
    prompt = build_prompt(REQUEST)
    for text in ("Language Quality (0-2)", "Factual Accuracy (0-3)",
                 "Cultural Appropriateness (0-3)", "Content Quality (0-2)", "CRITICAL CHECKS",
                 f"Question: {REQUEST.question}", f"Expected Answer: {REQUEST.reference}",
                 f"Model Response (localized): {REQUEST.response}"):
        assert text in prompt
    assert "{" not in JUDGE_PROMPT.format(question="", ground_truth="", response_type="",
                                          model_response="").split("Reply with")[0]


# --------------------------------------------------------------------------------------------
# The HTTP judge against a fake OpenAI-compatible server
# --------------------------------------------------------------------------------------------


class FakeServer:
    """A chat-completions server on 127.0.0.1 whose replies come from a script of
    (status, content) pairs; the last entry repeats. Records every request."""

    def __init__(self, script, delay=0.0):
        self.script = list(script)
        self.delay = delay
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body,
                                        "auth": self.headers.get("Authorization")})
                index = min(len(server.requests) - 1, len(server.script) - 1)
                status, content = server.script[index]
                if server.delay:
                    time.sleep(server.delay)
                if status == 200:
                    payload = json.dumps({"choices": [{"message": {"role": "assistant",
                                                                   "content": content}}]})
                else:
                    payload = json.dumps({"error": {"message": content}})
                data = payload.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def make(server, tmp_path=None, **kwargs):
    kwargs.setdefault("max_retries", 2)
    kwargs.setdefault("timeout", 5.0)
    return OpenAIJudge(server.base_url, "judge-model", "secret-key", sleep=lambda _: None,
                       cache_path=(tmp_path / "verdicts.jsonl") if tmp_path else None, **kwargs)


def test_http_judge_success(tmp_path):
    with FakeServer([(200, GOOD)]) as server:
        verdict = make(server, tmp_path).score(REQUEST)
    assert verdict.ok and verdict.error is None
    assert verdict.scores["factual_accuracy"] == 3
    assert verdict.total == 8 and verdict.normalized == pytest.approx(8 / MAX_TOTAL)
    [request] = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer secret-key"
    assert request["body"]["model"] == "judge-model"
    assert request["body"]["messages"][0]["content"] == build_prompt(REQUEST)


def test_malformed_reply_is_retried_then_recorded_as_failure(tmp_path):
    with FakeServer([(200, "Looks fine to me, good answer!")]) as server:
        judge = make(server, tmp_path, max_retries=2)
        verdict = judge.score(REQUEST)
        assert len(server.requests) == 3  # one try + two retries
        assert not verdict.ok
        assert verdict.scores is None and verdict.total is None and verdict.normalized is None
        assert "malformed" in verdict.error and verdict.attempts == 3
        assert verdict.as_record()["judge_total"] is None
        # failures are not cached: the next call asks again
        judge.score(REQUEST)
        assert len(server.requests) == 6


def test_malformed_then_valid_reply_succeeds_on_retry():
    with FakeServer([(200, "no idea"), (200, GOOD)]) as server:
        verdict = make(server).score(REQUEST)
    assert verdict.ok and verdict.attempts == 2 and verdict.total == 8


def test_server_errors_are_retried():
    with FakeServer([(500, "overloaded"), (429, "slow down"), (200, GOOD)]) as server:
        verdict = make(server).score(REQUEST)
    assert verdict.ok and len(server.requests) == 3


def test_timeouts_are_retried_then_recorded_as_failure():
    with FakeServer([(200, GOOD)], delay=1.0) as server:
        verdict = make(server, timeout=0.2, max_retries=1).score(REQUEST)
    assert not verdict.ok and verdict.attempts == 2 and verdict.scores is None
    assert "Timeout" in verdict.error or "timed out" in verdict.error


def test_bad_request_is_not_retried():
    with FakeServer([(400, "context too long")]) as server:
        verdict = make(server).score(REQUEST)
    assert not verdict.ok and len(server.requests) == 1 and "HTTP 400" in verdict.error


def test_bad_key_raises_a_user_error():
    with FakeServer([(401, "invalid key")]) as server:
        with pytest.raises(JudgeConfigError, match="YAPO_JUDGE_API_KEY"):
            make(server).score(REQUEST)


def test_cache_hit_makes_no_second_request(tmp_path):
    with FakeServer([(200, GOOD)]) as server:
        first = make(server, tmp_path).score(REQUEST)
        assert len(server.requests) == 1
        again = make(server, tmp_path).score(REQUEST)  # a new judge reads the cache file
        assert len(server.requests) == 1
        assert again.cached and again.scores == first.scores
        other = make(server, tmp_path).score(JudgeRequest("Another question?", "ref", "resp"))
        assert other.ok and not other.cached and len(server.requests) == 2
        # the key includes the judge model: another model is asked again
        OpenAIJudge(server.base_url, "other-model", cache_path=tmp_path / "verdicts.jsonl",
                    sleep=lambda _: None).score(REQUEST)
        assert len(server.requests) == 3


def test_score_many_keeps_order_with_workers():
    requests = [JudgeRequest(f"q{i}", "ref", f"resp{i}") for i in range(6)]
    with FakeServer([(200, GOOD)]) as server:
        verdicts = make(server, workers=3).score_many(requests, progress=False)
    assert len(verdicts) == 6 and all(verdict.ok for verdict in verdicts)
    prompts = {request["body"]["messages"][0]["content"] for request in server.requests}
    assert prompts == {build_prompt(request) for request in requests}


def test_from_env_and_flags(monkeypatch):
    monkeypatch.setenv("YAPO_JUDGE_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("YAPO_JUDGE_MODEL", "env-model")
    monkeypatch.delenv("YAPO_JUDGE_API_KEY", raising=False)
    judge = OpenAIJudge.from_env()
    assert judge.url == "http://127.0.0.1:9/v1/chat/completions" and judge.model == "env-model"
    assert judge.api_key is None
    assert OpenAIJudge.from_env(model="flag-model").model == "flag-model"
    monkeypatch.delenv("YAPO_JUDGE_MODEL")
    with pytest.raises(UserError, match="YAPO_JUDGE_MODEL"):
        make_judge("openai")
    assert make_judge("none") is None
    assert make_judge("local").weaker


# --------------------------------------------------------------------------------------------
# The offline heuristic judge
# --------------------------------------------------------------------------------------------

OPTIONS = (("egypt", "ful medames and taameya with baladi bread"),
           ("morocco", "msemen with mint tea and olive oil"),
           ("western", "cereal with milk and orange juice"))
BASE = dict(question="What do we eat for breakfast?", reference="Ful medames with baladi bread.",
            language="english", country="egypt", options=OPTIONS)


def local(response):
    return LocalJudge().score(JudgeRequest(response=response, **BASE))


def test_local_judge_is_labelled_weaker():
    assert LocalJudge.weaker and "weaker" in LocalJudge().name


def test_local_judge_rewards_the_own_countrys_answer():
    good = local("We usually eat ful medames and taameya with fresh baladi bread at home.")
    western = local("We usually eat cereal with milk and a glass of orange juice at home.")
    assert good.ok and good.scores["cultural_appropriateness"] == 3
    assert western.scores["cultural_appropriateness"] == 0
    assert good.scores["factual_accuracy"] > western.scores["factual_accuracy"]
    assert good.total > western.total


def test_local_judge_penalises_wrong_script_and_repetition():
    arabic = local("نأكل الفول والطعمية مع العيش البلدي")
    assert arabic.scores["language_quality"] == 0
    repeated = local("ful ful ful ful ful ful ful ful ful ful ful ful")
    assert repeated.scores["content_quality"] == 0
    empty = local("")
    assert empty.total == 0


# --------------------------------------------------------------------------------------------
# Dead servers: a deadline per request, giving up on an endpoint that never answers
# --------------------------------------------------------------------------------------------


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never answers (a hung server)."""

    def __init__(self):
        import socket

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.connections = []
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self):
        while self.running:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections.append(connection)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.socket.close()
        for connection in self.connections:
            connection.close()


def test_a_server_that_never_answers_hits_the_deadline_and_is_given_up():
    from yapo_interp.judge import Verdict, unscored_message

    with SilentServer() as server:
        # the per-try timeout alone (10 s x 4 tries) would hold a request 40 s; the deadline
        # ends it after the first try
        judge = OpenAIJudge(server.base_url, "judge-model", timeout=10.0, deadline=0.3,
                            max_retries=3, retry_wait=0.01, give_up_after=2, workers=1)
        verdicts = judge.score_many([REQUEST] * 6, progress=False)
    assert not any(verdict.ok for verdict in verdicts)
    assert verdicts[0].attempts == 1 and "deadline" in verdicts[0].error
    assert "timed out" in verdicts[0].error or "Timeout" in verdicts[0].error
    assert all(verdict.attempts == 0 and "looks down" in verdict.error
               for verdict in verdicts[2:])  # not sent after two failures in a row
    assert judge.requests_made == 2 and judge.failures == 6
    message = unscored_message(verdicts, judge.name)
    assert message.startswith("the openai:judge-model left 6 of 6 open-ended responses unscored")
    assert "looks down" in message and "\n" not in message
    assert unscored_message([Verdict("j", True, scores={"a": 1.0})]) is None


def test_malformed_replies_do_not_count_as_a_dead_endpoint():
    with FakeServer([(200, "no scores here")]) as server:
        judge = make(server, max_retries=0, give_up_after=1, workers=1)
        verdicts = judge.score_many([REQUEST] * 3, progress=False)
    assert len(server.requests) == 3 and all("malformed" in v.error for v in verdicts)


def test_a_closed_port_is_reported_before_any_work():
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    judge = OpenAIJudge(f"http://127.0.0.1:{port}/v1", "judge-model")
    with pytest.raises(JudgeConfigError, match=r"cannot be reached \(Connection refused\): start "
                                               r"the server or fix --judge-base-url"):
        judge.check_reachable()
    with FakeServer([(200, GOOD)]) as server:
        make(server).check_reachable()  # a listening server passes
    with pytest.raises(UserError, match="--judge-deadline must be a positive"):
        OpenAIJudge("http://127.0.0.1:1/v1", "m", deadline=0)


def test_one_script_table_serves_the_judge_and_the_corpus_filter():
    from yapo_interp.corpus.text import script_fraction
    from yapo_interp.judge.local import letter_script

    assert [letter_script(c) for c in "aé\u0639\u0761\ufe8e\u0915中"] == [
        "latin", "latin", "arabic", "arabic", "arabic", "devanagari", "other"]
    assert script_fraction("\u0639\u0761 ab", "arabic") == 0.5  # Arabic Supplement counts
    assert script_fraction("\u0915\u0916 ab", "hindi") == 0.5
