"""Admin requests without Ray: bearer token checked in constant time, refused when unset,
promote/rollback/versions on a real weights store, and the token never logged."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging

import pytest

from online_distill.serving.admin import ADMIN_MAX_BODY_BYTES, AdminService
from online_distill.weights.store import LocalWeightsStore
from tests.unit.test_learner import TOKENIZER, tiny_model

ENV = "OD_TEST_ADMIN_TOKEN"
TOKEN = "adm-0123456789-s3cret"


@pytest.fixture
def store(tmp_path) -> LocalWeightsStore:
    store = LocalWeightsStore(tmp_path)
    model = tiny_model(5)
    for step in range(3):
        store.publish(model, TOKENIZER, learner_step=step)
    store.promote(1)
    store.promote(2)
    return store


def call(admin: AdminService, op, auth: str | None, body: object = None):
    async def read() -> bytes:
        return body if isinstance(body, bytes) else json.dumps(body).encode()

    return asyncio.run(admin.handle(op, auth, None if body is None else read))


def admin_of(store: LocalWeightsStore, token: str | None = TOKEN) -> AdminService:
    return AdminService(store, ENV, environ={} if token is None else {ENV: token})


@pytest.mark.parametrize("op", ["promote", "rollback", "versions"])
def test_no_or_malformed_header_is_401_with_www_authenticate(store, op) -> None:
    admin = admin_of(store)
    for auth in (None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN} x"):
        status, body, headers = call(admin, op, auth, {"version": 3})
        assert status == 401, auth
        assert headers == {"WWW-Authenticate": "Bearer"}
        assert body["error"]["code"] == "missing_token" and ENV in body["error"]["message"]
    assert store.promoted() == 2


def test_wrong_token_is_403_and_changes_nothing(store) -> None:
    admin = admin_of(store)
    for auth in ("Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"):
        status, body, headers = call(admin, "promote", auth, {"version": 3})
        assert (status, body["error"]["code"], headers) == (403, "invalid_token", {})
    assert store.promoted() == 2 and len(store.history()) == 2


@pytest.mark.parametrize("token", [None, ""])
def test_admin_is_disabled_until_the_variable_is_set(store, token) -> None:
    admin = admin_of(store, token)
    for auth in (None, "Bearer ", "Bearer anything"):  # an empty token never opens it
        status, body, _ = call(admin, "promote", auth, {"version": 3})
        assert status == 403 and body["error"]["code"] == "admin_disabled"
        assert f"set the environment variable {ENV}" in body["error"]["message"]
    assert store.promoted() == 2


def test_reads_the_token_from_the_environment(store, monkeypatch) -> None:
    admin = AdminService(store, ENV)
    monkeypatch.delenv(ENV, raising=False)
    assert call(admin, "versions", f"Bearer {TOKEN}")[0] == 403
    monkeypatch.setenv(ENV, TOKEN)
    assert call(admin, "versions", f"Bearer {TOKEN}")[0] == 200


def test_promote_rollback_and_versions_change_the_store(store) -> None:
    admin = admin_of(store)
    auth = f"bearer  {TOKEN} "  # the scheme is case-insensitive; spaces around are fine
    status, body, _ = call(admin, "promote", auth, {"version": 3})
    assert status == 200, body
    assert (body["promoted"], body["previous"], body["by"]) == (3, 2, "admin-api")
    assert store.promoted() == 3
    last = store.history()[-1]
    assert (last["version"], last["reason"], last["by"]) == (3, "manual", "admin-api")
    status, body, _ = call(admin, "rollback", auth, {"version": None})
    assert (status, body["promoted"], body["previous"]) == (200, 2, 3)
    assert store.promoted() == 2 and store.history()[-1]["reason"] == "rollback"
    status, body, _ = call(admin, "rollback", auth, {"version": 3})
    assert (status, body["promoted"]) == (200, 3) and store.promoted() == 3
    # No body: the store's rollback target (v2 and v3 were rolled back from, so v1).
    status, body, _ = call(admin, "rollback", auth, b"")
    assert (status, body["promoted"]) == (200, 1) and store.promoted() == 1
    status, body, _ = call(admin, "versions", auth)
    assert status == 200 and body["promoted"] == 1
    assert [(r["version"], r["promoted"]) for r in body["data"]] == [(1, True), (2, False),
                                                                     (3, False)]


def test_bad_bodies_get_clear_4xx(store) -> None:
    admin = admin_of(store)
    auth = f"Bearer {TOKEN}"
    cases = [
        ("promote", {"version": 9}, 404, "version_not_found"),
        ("rollback", {"version": 9}, 404, "version_not_found"),
        ("promote", {}, 400, "invalid_version"),
        ("promote", {"version": True}, 400, "invalid_version"),
        ("promote", {"version": "3"}, 400, "invalid_version"),
        ("promote", {"version": 0}, 400, "invalid_version"),
        ("promote", {"version": 3, "force": True}, 400, "invalid_body"),
        ("promote", [3], 400, "invalid_body"),
        ("promote", b"{not json", 400, "invalid_json"),
        ("promote", b'{"version": 3' + b" " * ADMIN_MAX_BODY_BYTES + b"}", 413,
         "body_too_large"),
    ]
    for op, body, status, code in cases:
        got, answer, _ = call(admin, op, auth, body)
        assert (got, answer["error"]["code"]) == (status, code), (op, body, answer)
    assert store.promoted() == 2


def test_nothing_to_roll_back_to_is_409(tmp_path) -> None:
    store = LocalWeightsStore(tmp_path)
    store.publish(tiny_model(5), TOKENIZER, learner_step=0)
    store.promote(1)
    status, body, _ = call(admin_of(store), "rollback", f"Bearer {TOKEN}", {})
    assert status == 409 and body["error"]["code"] == "nothing_to_roll_back"


def test_an_unauthorised_request_body_is_never_read(store) -> None:
    async def read() -> bytes:
        raise AssertionError("the body of an unauthorised request was read")

    for admin, auth in ((admin_of(store), None), (admin_of(store), "Bearer wrong"),
                        (admin_of(store, None), f"Bearer {TOKEN}")):
        assert asyncio.run(admin.handle("promote", auth, read))[0] in (401, 403)


def test_the_token_is_compared_in_constant_time(store, monkeypatch) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def recording(a, b):  # type: ignore[no-untyped-def]
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    admin = admin_of(store)
    assert call(admin, "versions", "Bearer wrong")[0] == 403
    assert call(admin, "versions", f"Bearer {TOKEN}")[0] == 200
    assert len(calls) == 2
    for a, b in calls:  # bytes of one length (digests): the time tells neither value
        assert isinstance(a, bytes) and isinstance(b, bytes) and len(a) == len(b) == 32
        assert TOKEN.encode() not in (a, b)


def test_the_token_is_never_logged_nor_echoed(store, caplog) -> None:
    admin = admin_of(store)
    answers = []
    with caplog.at_level(logging.DEBUG):
        for auth, body in ((f"Bearer {TOKEN}", {"version": 3}), (f"Bearer {TOKEN}", {}),
                           (f"Bearer {TOKEN}x", {"version": 1}), (TOKEN, {"version": 1}),
                           (f"Bearer {TOKEN}", {"version": TOKEN})):
            answers.append(call(admin, "promote", auth, body))
        answers.append(call(admin, "rollback", f"Bearer {TOKEN}", None))
        answers.append(call(admin_of(store, None), "versions", f"Bearer {TOKEN}"))
    assert [a[0] for a in answers] == [200, 400, 403, 401, 400, 200, 403]
    assert any("promoted v3" in r.getMessage() for r in caplog.records)
    assert any("refused" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert TOKEN not in record.getMessage() and TOKEN not in repr(record.args)
    for status, body, headers in answers:
        if status != 400:  # a 400 may quote the value sent in the body, never the header
            assert TOKEN not in json.dumps(body) + json.dumps(headers)
