"""The API fuzzed from its own OpenAPI schema (schemathesis): bodies that follow the schema and bodies that
break it, sent to a live server. No answer may be a 5xx, and every error comes in OpenAI's error shape."""
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


@pytest.fixture(scope="module")
def operations(server):
    spec = httpx.get(server.url + "/openapi.json", timeout=30).json()
    return {(op.method.upper(), op.path): op for op in
            (result.ok() for result in schemathesis.openapi.from_dict(spec).get_all_operations())}


def fuzz(server, op, mode, examples: int) -> dict:
    """Send `examples` generated requests; the status codes seen, counted. A body naming a model names
    the tiny one (a random name only ever meets the 404)."""
    seen: dict = {}

    @given(op.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case):
        if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
            case.body["model"] = "tiny"
        r = case.call(base_url=server.url, timeout=60)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (case.body, r.text[:300])
        ctype = r.headers.get("content-type") or [""]  # schemathesis keeps each header as a list
        if r.status_code >= 400 and (ctype[0] if isinstance(ctype, list) else ctype).startswith("application/json"):
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text[:300]

    check()
    return seen


@pytest.mark.parametrize("mode", MODES, ids=["valid", "invalid"])
def test_completions_never_answer_5xx(server, operations, mode):
    seen = fuzz(server, operations[("POST", "/v1/completions")], mode, 200)
    assert sum(seen.values()) >= 100  # the schema leaves room for many distinct requests
    if mode == GenerationMode.POSITIVE:
        assert seen.get(200, 0) >= 20  # valid bodies do generate, not only meet a limit


def test_every_other_operation_never_answers_5xx(server, operations):
    for key, op in operations.items():
        if key != ("POST", "/v1/completions"):
            fuzz(server, op, GenerationMode.POSITIVE, 25)
            try:
                fuzz(server, op, GenerationMode.NEGATIVE, 25)
            except Unsatisfiable:  # an operation without inputs (GET /health) has nothing to break
                pass


def extreme_numbers():
    """Numbers a careless or hostile client sends: tiny, huge, negative, off by one, wrong kind."""
    from hypothesis import strategies as st

    return st.one_of(st.integers(-3, 70), st.sampled_from([10 ** 20, -10 ** 20, 2 ** 63, 2 ** 31, 1e308, -1e308,
                                                           1e-300, 0.5, 2.5, 0.0, -0.0, 1e20]), st.none())


OPTIONS = ["max_tokens", "temperature", "top_p", "n", "logprobs", "presence_penalty", "frequency_penalty", "seed",
           "best_of", "top_k", "min_p", "typical_p", "repetition_penalty", "no_repeat_ngram_size", "dry_multiplier",
           "dry_base", "dry_allowed_length", "dry_penalty_last_n", "num_beams", "length_penalty", "min_tokens"]


def test_option_combinations_with_extreme_values_never_answer_5xx(server):
    """Hypothesis over several options at once, each a small, huge, negative or fractional number or null,
    and logit_bias entries of any id and value: a 200, or a 400 naming an option, never a 5xx."""
    from hypothesis import strategies as st

    bodies = st.fixed_dictionaries({"model": st.just("tiny"), "prompt": st.sampled_from(["KING:", "", [1, 2, 3]])},
                                   optional={**{k: extreme_numbers() for k in OPTIONS},
                                             "logit_bias": st.dictionaries(st.sampled_from(["0", "5", "-1", "99999",
                                                                                            "x", "1e3"]),
                                                                           extreme_numbers(), max_size=3),
                                             "early_stopping": st.sampled_from([True, False, "never", "x", 1, None])})

    @given(bodies)
    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(body):
        body.setdefault("max_tokens", 8)
        r = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
        assert r.status_code in (200, 400), (body, r.status_code, r.text[:300])
        if r.status_code == 400:
            err = r.json()["error"]
            assert set(err) == {"message", "type", "param", "code"} and err["message"], r.text

    check()


EXTREMES = [10 ** 20, -10 ** 20, 2 ** 63, 2 ** 31, 1e308, -1e308, 1e-300, 2.5, -1, 0, None, "1", True, [], {}]


def test_every_option_at_every_extreme_value(server):
    """Each option alone at each extreme value (the sweep hypothesis may miss): a 200 or a 400 naming it."""
    bad = []
    with httpx.Client(timeout=60) as c:
        for name in OPTIONS + ["logit_bias", "early_stopping", "stop", "bad_words", "echo", "stream", "prompt"]:
            for value in EXTREMES:
                body = {"model": "tiny", "prompt": "KING:", "max_tokens": 4, name: value}
                if name == "logit_bias" and not isinstance(value, (dict, list)):
                    body[name] = {"0": value}
                r = c.post(server.url + "/v1/completions", json=body)
                ok = r.status_code == 200 or (r.status_code == 400 and r.json()["error"]["param"] in (name, None))
                if not ok:
                    bad.append((name, value, r.status_code, r.text[:200]))
    assert not bad, bad
