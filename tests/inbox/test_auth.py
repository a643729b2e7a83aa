"""Sign-in to the web inbox: personal tokens into a signed session cookie, the trusted proxy header (only when
configured), CSRF tokens on every form, the session secret, and sign-out. Refusals change nothing."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipewarden.errors import PipewardenError, UserError
from pipewarden.inbox import auth
from pipewarden.inbox.web import create_app
from pipewarden.models import ProposalStatus
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.inbox.conftest import make_proposal
from tests.inbox.web_client import csrf_of, page_csrf, sign_in, snapshot


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app())


def set_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()


# --------------------------------------------------------------------------- tokens and the session
def test_sign_in_with_a_token_sets_a_signed_httponly_cookie(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    token = store.issue_token("alice")
    csrf = csrf_of(client.get(f"/login?next=/proposals/{p.id}").text)
    resp = client.post("/login", data={"token": token, "csrf_token": csrf, "next": f"/proposals/{p.id}"},
                       follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == f"/proposals/{p.id}"
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith(f"{auth.SESSION_COOKIE}=") and "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert token not in cookie  # the session names the person, never the token
    page = client.get(f"/proposals/{p.id}").text
    assert 'id="signed-in-as">alice<' in page


@pytest.mark.parametrize("which", ["unknown", "revoked", "empty"])
def test_a_bad_token_does_not_sign_in(client: TestClient, store: StateStore, which: str) -> None:
    token = {"unknown": "pw_nobody-has-this", "revoked": store.issue_token("carol"), "empty": ""}[which]
    store.revoke_tokens("carol")
    csrf = csrf_of(client.get("/login").text)
    resp = client.post("/login", data={"token": token, "csrf_token": csrf}, follow_redirects=False)
    assert resp.status_code == 401
    assert "unknown or has been revoked" in resp.text and "pipewarden approvers token" in resp.text
    assert client.get("/", follow_redirects=False).status_code == 303  # still not signed in


def test_a_forged_session_cookie_is_not_believed(store: StateStore) -> None:
    import base64
    import json

    from itsdangerous import TimestampSigner

    make_proposal(store)
    payload = base64.b64encode(json.dumps({"user": "alice"}).encode())
    forged = {
        "unsigned": payload.decode() + ".AAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "other key": TimestampSigner("not-the-servers-secret-" * 2).sign(payload).decode(),
    }
    for how, cookie in forged.items():
        client = TestClient(create_app(), cookies={auth.SESSION_COOKIE: cookie})
        assert client.get("/", follow_redirects=False).status_code == 303, how
    # Even a cookie signed with the server's own key names nobody: who is signed in is the server-side session.
    signed = TimestampSigner(auth.session_secret()).sign(payload).decode()
    assert TestClient(create_app(), cookies={auth.SESSION_COOKIE: signed}).get("/", follow_redirects=False
                                                                                ).status_code == 303
    bogus = TimestampSigner(auth.session_secret()).sign(base64.b64encode(json.dumps({"sid": "guessed"}).encode()))
    assert TestClient(create_app(), cookies={auth.SESSION_COOKIE: bogus.decode()}).get(
        "/", follow_redirects=False).status_code == 303


# --------------------------------------------------------------------------- server-side sessions
def test_revoking_the_token_ends_the_session_on_the_next_request(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    sign_in(client, "alice", store)
    csrf = page_csrf(client, f"/proposals/{p.id}")
    old_cookie = dict(client.cookies)
    assert store.revoke_tokens("alice") == 1  # what `pipewarden approvers token alice --revoke` does
    assert client.get("/", follow_redirects=False).status_code == 303
    replay = TestClient(create_app(), cookies=old_cookie)  # the old cookie, kept by an attacker
    assert replay.get(f"/proposals/{p.id}", follow_redirects=False).status_code == 303
    before = snapshot(store)
    resp = replay.post(f"/proposals/{p.id}/approve", data={"csrf_token": csrf})
    assert resp.status_code == 401 and snapshot(store) == before


def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    sign_in(client, "alice", store)
    csrf = page_csrf(client, "/")
    old_cookie = dict(client.cookies)
    assert client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    replay = TestClient(create_app(), cookies=old_cookie)  # the cookie as it was before signing out
    assert replay.get("/", follow_redirects=False).status_code == 303
    before = snapshot(store)
    assert replay.post(f"/proposals/{p.id}/approve", data={"csrf_token": csrf}).status_code == 401
    assert snapshot(store) == before
    # the token itself still works: signing out ended this session only
    fresh = TestClient(create_app())
    sign_in(fresh, "alice", store)
    assert fresh.get("/").status_code == 200


def test_the_cookie_carries_a_session_key_not_a_name(client: TestClient, store: StateStore) -> None:
    import base64
    import json

    sign_in(client, "alice", store)
    payload = client.cookies[auth.SESSION_COOKIE].split(".")[0]
    data = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    assert set(data) == {auth.SESSION_KEY, auth.CSRF_KEY} and "alice" not in json.dumps(data)


# --------------------------------------------------------------------------- failed sign-ins
def test_failed_sign_ins_are_audited_and_throttled_per_address(client: TestClient, store: StateStore) -> None:
    from pipewarden.sessions import THROTTLE

    csrf = csrf_of(client.get("/login").text)
    codes = [client.post("/login", data={"token": f"pw_guess-{i}", "csrf_token": csrf}).status_code
             for i in range(THROTTLE.max_failures + 3)]
    assert codes == [401] * THROTTLE.max_failures + [429] * 3
    refused = client.post("/login", data={"token": store.issue_token("alice"), "csrf_token": csrf})
    assert refused.status_code == 429  # even a good token waits: the block comes before the token is looked at
    assert int(refused.headers["retry-after"]) >= 1 and "too many failed sign-ins" in refused.text
    audit = [(e.action, e.actor, e.detail.get("reason")) for e in store.audit_entries()
             if e.action.startswith("sign_in")]
    assert audit == [("sign_in_failed", "anonymous", "unknown token")] * THROTTLE.max_failures + [
        ("sign_in_throttled", "anonymous", None)]  # refused attempts are not audited one by one
    assert all(e.detail["address"] == "testclient" for e in store.audit_entries() if e.action.startswith("sign_in"))
    # another address is not blocked
    other = TestClient(create_app(), client=("10.0.0.9", 50000))
    other_csrf = csrf_of(other.get("/login").text)
    assert other.post("/login", data={"token": store.issue_token("carol"), "csrf_token": other_csrf},
                      follow_redirects=False).status_code == 303


def test_a_revoked_tokens_failures_count_against_its_account(store: StateStore) -> None:
    from pipewarden.sessions import THROTTLE

    revoked = store.issue_token("carol")
    store.revoke_tokens("carol")
    for i in range(THROTTLE.max_failures):  # each from another address
        c = TestClient(create_app(), client=(f"10.0.1.{i}", 40000))
        assert c.post("/login", data={"token": revoked, "csrf_token": csrf_of(c.get("/login").text)}
                      ).status_code == 401
    failed = [e for e in store.audit_entries() if e.action == auth.SIGN_IN_FAILED]
    assert {(e.actor, e.detail["reason"]) for e in failed} == {("carol", "revoked token")}
    blocked = [e for e in store.audit_entries() if e.action == auth.SIGN_IN_THROTTLED]
    assert len(blocked) == 1 and list(blocked[0].detail["blocked"]) == ["account:carol"]


def test_bad_bearer_tokens_are_audited_and_throttled_too(client: TestClient, store: StateStore) -> None:
    from pipewarden.sessions import THROTTLE

    codes = [client.get("/api/proposals", headers={"Authorization": f"Bearer pw_guess-{i}"}).status_code
             for i in range(THROTTLE.max_failures + 1)]
    assert codes == [401] * THROTTLE.max_failures + [429]
    resp = client.get("/api/proposals", headers={"Authorization": f"Bearer {store.issue_token('alice')}"})
    assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1
    assert resp.json()["error"].startswith("too many failed sign-ins")
    assert [e.detail["via"] for e in store.audit_entries() if e.action == auth.SIGN_IN_FAILED] == \
        ["api"] * THROTTLE.max_failures


def test_the_block_grows_exponentially_and_the_window_forgets() -> None:
    from datetime import timedelta

    from pipewarden.ids import utcnow
    from pipewarden.sessions import SessionStore, ThrottlePolicy

    policy = ThrottlePolicy(max_failures=3, window_s=600, base_delay_s=2, max_delay_s=30)
    assert [policy.delay_s(n) for n in range(1, 9)] == [0, 0, 2, 4, 8, 16, 30, 30]
    sessions = SessionStore(StateStore().engine)
    t0 = utcnow()
    got = [sessions.record_failure(["address:x"], policy, now=t0 + timedelta(seconds=i)) for i in range(4)]
    assert got == [{}, {}, {"address:x": 2}, {"address:x": 4}]
    assert sessions.retry_after(["address:x"], now=t0 + timedelta(seconds=4)) == 3
    assert sessions.retry_after(["address:x"], now=t0 + timedelta(seconds=8)) is None
    later = t0 + timedelta(seconds=601)  # a new window: counting starts again
    assert sessions.record_failure(["address:x"], policy, now=later) == {}


# --------------------------------------------------------------------------- security headers
def test_every_answer_carries_csp_and_anti_framing_headers(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    answers = [client.get("/login"), client.get("/static/inbox.css"), client.get("/healthz"),
               client.get("/api/proposals"), client.post("/slack/events", content=b"x"),
               client.post("/api/events", content=b"x" * (70 * 1024))]
    sign_in(client, "alice", store)
    answers += [client.get("/"), client.get(f"/proposals/{p.id}"), client.get("/proposals/ffffffff")]
    for resp in answers:
        h = resp.headers
        assert "frame-ancestors 'none'" in h["content-security-policy"], resp.request.url
        assert "default-src 'self'" in h["content-security-policy"]
        assert "'unsafe-inline'" not in h["content-security-policy"]
        assert (h["x-frame-options"], h["referrer-policy"], h["x-content-type-options"]) == \
            ("DENY", "no-referrer", "nosniff")
    assert {r.status_code for r in answers} == {200, 401, 404, 413, 503}


def test_the_pages_have_no_inline_script_or_style(client: TestClient, store: StateStore) -> None:
    """The CSP forbids inline script and style: the pages must not need them."""
    import re

    p = make_proposal(store)
    pages = [client.get("/login").text]
    sign_in(client, "alice", store)
    pages += [client.get("/").text, client.get(f"/proposals/{p.id}").text]
    for html in pages:
        assert "<script" not in html and "<style" not in html
        assert not re.search(r"\s(style|on[a-z]+)=", html)


def test_the_next_page_after_sign_in_stays_on_this_site(client: TestClient, store: StateStore) -> None:
    for evil in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"):
        assert auth.safe_next(evil) == "/"
    assert auth.safe_next("/proposals/abcd?flash=x") == "/proposals/abcd?flash=x"
    token = store.issue_token("alice")
    csrf = csrf_of(client.get("/login").text)
    resp = client.post("/login", data={"token": token, "csrf_token": csrf, "next": "//evil.example/"},
                       follow_redirects=False)
    assert resp.headers["location"] == "/"


def test_sign_out_needs_the_csrf_token_and_ends_the_session(client: TestClient, store: StateStore) -> None:
    sign_in(client, "alice", store)
    assert client.post("/logout", data={}).status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 200
    resp = client.post("/logout", data={"csrf_token": page_csrf(client, "/")}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/login"
    assert client.get("/", follow_redirects=False).status_code == 303


def test_signing_in_again_rotates_the_csrf_token(client: TestClient, store: StateStore) -> None:
    before = csrf_of(client.get("/login").text)
    sign_in(client, "alice", store)
    assert page_csrf(client, "/") != before


# --------------------------------------------------------------------------- CSRF
def test_a_form_post_without_csrf_is_403_with_a_clear_page(client: TestClient, store: StateStore,
                                                           resumer: list[str]) -> None:
    p = make_proposal(store)
    sign_in(client, "alice", store)
    before = snapshot(store)
    for path, data in (("approve", {}), ("reject", {"reason": "no"}), ("edit", {"rename_from": "x", "rename_to": "y"}),
                       ("resume", {})):
        resp = client.post(f"/proposals/{p.id}/{path}", data=data)
        assert resp.status_code == 403, path
        assert "no valid CSRF token" in resp.text and "reload the page" in resp.text
    assert snapshot(store) == before and resumer == []
    assert store.get_proposal(p.id).status == ProposalStatus.pending


def test_a_csrf_token_from_another_session_is_refused(store: StateStore) -> None:
    p = make_proposal(store)
    mallory, alice = TestClient(create_app()), TestClient(create_app())
    sign_in(mallory, "carol", store)
    sign_in(alice, "alice", store)
    foreign = page_csrf(mallory, f"/proposals/{p.id}")
    before = snapshot(store)
    resp = alice.post(f"/proposals/{p.id}/approve", data={"csrf_token": foreign})
    assert resp.status_code == 403 and "CSRF" in resp.text
    assert snapshot(store) == before


def test_the_login_form_needs_csrf_too(client: TestClient, store: StateStore) -> None:
    token = store.issue_token("alice")
    client.get("/login")
    resp = client.post("/login", data={"token": token}, follow_redirects=False)
    assert resp.status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_post_without_sign_in_is_401_and_changes_nothing(client: TestClient, store: StateStore) -> None:
    p = make_proposal(store)
    csrf = csrf_of(client.get("/login").text)  # a session with a CSRF token but nobody signed in
    before = snapshot(store)
    resp = client.post(f"/proposals/{p.id}/approve", data={"csrf_token": csrf})
    assert resp.status_code == 401 and "not signed in" in resp.text
    assert snapshot(store) == before


# --------------------------------------------------------------------------- the trusted proxy header
def test_the_proxy_header_is_ignored_unless_configured(client: TestClient, store: StateStore) -> None:
    make_proposal(store)
    resp = client.get("/", headers={"X-Forwarded-User": "alice"}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"].startswith("/login")


def test_the_configured_proxy_header_names_the_approver(monkeypatch: pytest.MonkeyPatch, store: StateStore,
                                                       resumer: list[str]) -> None:
    set_env(monkeypatch, PIPEWARDEN_TRUSTED_USER_HEADER="X-Forwarded-User")
    client = TestClient(create_app(), headers={"X-Forwarded-User": "bob"})
    p = make_proposal(store)
    page = client.get(f"/proposals/{p.id}")
    assert page.status_code == 200 and 'id="signed-in-as">bob<' in page.text
    resp = client.post(f"/proposals/{p.id}/approve", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert resp.status_code == 303
    assert [(d.actor, d.via) for d in store.decisions_for(p.id)] == [("bob", "web")]


@pytest.mark.parametrize(("who", "words"), [
    ("system", "system identity"), ("agent:schema_drift", "system identity"), ("mallory", "not an approver"),
])
def test_system_agent_and_unknown_identities_never_decide(
    monkeypatch: pytest.MonkeyPatch, store: StateStore, resumer: list[str], who: str, words: str
) -> None:
    from pipewarden.inbox import service
    from pipewarden.models import Verdict

    set_env(monkeypatch, PIPEWARDEN_TRUSTED_USER_HEADER="X-Forwarded-User")
    client = TestClient(create_app(), headers={"X-Forwarded-User": who})
    p = make_proposal(store)
    assert client.get(f"/proposals/{p.id}").status_code == 404  # no role on flights: not even readable
    csrf = page_csrf(client, "/")
    before = snapshot(store)
    resp = client.post(f"/proposals/{p.id}/approve", data={"csrf_token": csrf})
    assert resp.status_code == 404 and "that you may read" in resp.text
    assert snapshot(store) == before and resumer == []
    with pytest.raises(PipewardenError, match=words):  # and the decision service refuses them by itself
        service.decide(p.id, Verdict.approve, who, resume=False)
    assert snapshot(store) == before


# --------------------------------------------------------------------------- the session secret
def test_the_session_secret_is_generated_once_and_kept_private(pw_home: Path) -> None:
    first = auth.session_secret()
    path = pw_home / auth.SECRET_FILE
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.session_secret() == first and len(first) >= 32
    assert not list(pw_home.glob(".session_secret.*"))  # no temporary file left behind


def test_a_session_survives_a_restart_of_the_server(store: StateStore) -> None:
    first = TestClient(create_app())
    sign_in(first, "alice", store)
    second = TestClient(create_app(), cookies=dict(first.cookies))
    assert second.get("/", follow_redirects=False).status_code == 200


def test_the_session_secret_setting_wins_and_a_short_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, pw_home: Path
) -> None:
    set_env(monkeypatch, PIPEWARDEN_SESSION_SECRET="s" * 40)
    assert auth.session_secret() == "s" * 40
    assert not (pw_home / auth.SECRET_FILE).exists()
    monkeypatch.delenv("PIPEWARDEN_SESSION_SECRET")
    get_settings.cache_clear()
    pw_home.mkdir(parents=True, exist_ok=True)
    (pw_home / auth.SECRET_FILE).write_text("short\n")
    with pytest.raises(UserError, match="too short") as info:
        auth.session_secret()
    assert "PIPEWARDEN_SESSION_SECRET" in (info.value.hint or "")


def test_a_sign_in_link_fills_the_form_but_never_signs_in_by_itself(client: TestClient, store: StateStore) -> None:
    token = store.issue_token("alice")  # the demo prints /login?token=... for its approver
    page = client.get(f"/login?token={token}&next=/proposals/abcd")
    assert f'name="token" value="{token}"' in page.text and 'name="next" value="/proposals/abcd"' in page.text
    assert client.get("/", follow_redirects=False).status_code == 303  # a GET alone signed nobody in
