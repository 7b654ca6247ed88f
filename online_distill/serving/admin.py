"""Admin requests over HTTP (promote, roll back, list versions), without Ray.

Every admin request, reads included, needs ``Authorization: Bearer <token>`` where the token
is the value of the environment variable named by ``serve.admin_token_env`` (read on each
request). Reads need it too: the version list shows scores, verdicts and training progress,
which an inference client has no need of. The answers:

- the variable unset or empty: 403 ``admin_disabled`` to everyone (refuse, never open);
- no ``Authorization`` header, or not of the form ``Bearer <token>``: 401 with
  ``WWW-Authenticate: Bearer``;
- a wrong token: 403 ``invalid_token``.

The token is compared with :func:`hmac.compare_digest` on the SHA-256 digests of both
values (constant time, and the digests have one length, so the time does not tell the
token's length either). Neither the token nor the header is ever logged or echoed back.
Only an authorised request has its body read. Errors use OpenAI's error shape
(:class:`online_distill.serving.validation.ApiError`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from online_distill.serving.validation import ApiError
from online_distill.weights import WeightsStore
from online_distill.weights.table import version_rows

log = logging.getLogger("online_distill.serving.admin")

Answer = tuple[int, dict[str, Any], dict[str, str]]
Operation = Literal["promote", "rollback", "versions"]
ReadBody = Callable[[], Awaitable[bytes]]
ADMIN_MAX_BODY_BYTES = 1024
"""Largest admin request body; ``{"version": 123}`` is 16 bytes."""
BY = "admin-api"
"""The ``by`` field of promotions made over HTTP, in the store's promotion history."""


class AdminService:
    """Authorises admin requests and runs them on the weights store every replica shares."""

    def __init__(self, store: WeightsStore, token_env: str,
                 environ: Mapping[str, str] | None = None) -> None:
        self.store, self.token_env = store, token_env
        self.environ = os.environ if environ is None else environ

    # -------------------------------------------------------------------- authorisation
    def authorize(self, authorization: str | None) -> None:
        """Return if ``authorization`` carries the admin token, else raise 401/403."""
        expected = self.environ.get(self.token_env, "")
        if not expected:
            raise ApiError(403, f"admin requests are disabled on this server: set the "
                                f"environment variable {self.token_env} (serve.admin_token_env) "
                                f"to a secret token where the Serve replicas run, then send "
                                f"it as 'Authorization: Bearer <token>'",
                           code="admin_disabled", type="permission_error")
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise ApiError(401, "admin requests need the header 'Authorization: Bearer <token>' "
                                f"with the token from the server's {self.token_env}",
                           code="missing_token", type="authentication_error")
        if not hmac.compare_digest(_digest(token), _digest(expected)):
            raise ApiError(403, "the admin token is not valid; send the token from the "
                                f"server's {self.token_env}",
                           code="invalid_token", type="permission_error")

    async def handle(self, op: Operation, authorization: str | None,
                     read_body: ReadBody | None = None) -> Answer:
        """Authorise, then read the body (only then) and run ``op``; every error answered."""
        try:
            self.authorize(authorization)
        except ApiError as err:
            log.warning("admin %s refused: %s (%d)", op, err.code, err.status)
            headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else {}
            return err.status, err.body(), headers
        try:
            if op == "versions":
                return 200, self.versions(), {}
            raw = await read_body() if read_body is not None else b""
            return 200, (self.promote(raw) if op == "promote" else self.rollback(raw)), {}
        except ApiError as err:
            return err.status, err.body(), {}

    # -------------------------------------------------------------------- operations
    def promote(self, raw: bytes) -> dict[str, Any]:
        """``{"version": V}``: serve V now (bypasses the gate; in the promotion history)."""
        version = _version(raw, required=True)
        assert version is not None
        before = self.store.promoted()
        self._check_exists(version)
        self.store.promote(version, reason="manual", by=BY)
        log.info("admin: promoted v%d (was v%s)", version, before)
        return self._result(before)

    def rollback(self, raw: bytes) -> dict[str, Any]:
        """``{"version": V}`` or ``{}``/``{"version": null}``/no body: the previous version."""
        version = _version(raw, required=False)
        before = self.store.promoted()
        if version is not None:
            self._check_exists(version)
        try:
            target = self.store.rollback(version, by=BY)
        except ValueError as exc:  # nothing to roll back to
            raise ApiError(409, f"nothing to roll back to: no earlier promoted version is "
                                f"still kept (versions: {self.store.versions()}); promote "
                                f"one by number instead", code="nothing_to_roll_back") from exc
        log.info("admin: rolled back from v%s to v%d", before, target)
        return self._result(before)

    def versions(self) -> dict[str, Any]:
        """Every kept version (as ``online-distill versions --json``) and the served one."""
        return {"object": "list", "promoted": self.store.promoted(),
                "data": version_rows(self.store)}

    def _check_exists(self, version: int) -> None:
        kept = self.store.versions()
        if version not in kept:
            raise ApiError(404, f"version {version} is not kept in the weights store; kept "
                                f"versions: {kept} (GET /admin/versions lists them)",
                           param="version", code="version_not_found")

    def _result(self, before: int | None) -> dict[str, Any]:
        version, effective_at = self.store.promotion()
        return {"promoted": version, "previous": before, "effective_at": effective_at,
                "by": BY}


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def _version(raw: bytes, *, required: bool) -> int | None:
    """The ``version`` of an admin body ``{"version": V}``; 400/413 with the fix otherwise."""
    if len(raw) > ADMIN_MAX_BODY_BYTES:
        raise ApiError(413, f"the request body is {len(raw)} bytes, over the admin limit of "
                            f"{ADMIN_MAX_BODY_BYTES}; send {{\"version\": N}}",
                       code="body_too_large")
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON ({exc}); send "
                                "{\"version\": N}", code="invalid_json") from exc
    if not isinstance(data, dict) or set(data) - {"version"}:
        raise ApiError(400, "the request body must be a JSON object with one field, "
                            "version; send {\"version\": N}", code="invalid_body")
    version = data.get("version")
    if version is None and not required:
        return None
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        fix = "" if required else " (or null for the previously served version)"
        raise ApiError(400, f"version must be a positive integer{fix}, got {version!r}; "
                            "GET /admin/versions lists the kept versions",
                       param="version", code="invalid_version")
    return version
