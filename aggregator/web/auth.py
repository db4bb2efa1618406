"""Who may decide: editors listed in feeds.yaml, or whoever holds the token in the environment.

Editors: `review.editors: [{name, password_hash}]`. A password hash is made by
`aggregator hash-password` and reads

    scrypt$<n>$<r>$<p>$<salt, base64>$<key, base64>

(hashlib.scrypt; n=2**14, r=8, p=1, a 16-byte random salt, a 32-byte key).

Token: env AGGREGATOR_EDITOR_TOKEN (16 characters at least). It signs in on the login form (with
any name not taken by a configured editor; decisions are recorded under that name, or "token") and
it is the API's `Authorization: Bearer <token>` (decisions recorded under "token").

Sessions are a cookie holding `<payload>.<signature>`: the payload is base64 JSON (editor, CSRF
token, expiry), the signature HMAC-SHA256 under a secret: env AGGREGATOR_SECRET_KEY, else a random
key created once in a file beside feeds.yaml (`.aggregator-secret`, mode 0600).

Guessing: after LOGIN_FAILURES failed sign-ins for one name from one address within LOGIN_WINDOW,
that name is refused from that address (429, Retry-After) until the oldest failure is out of the
window.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from aggregator.config import Editor, Settings
from aggregator.errors import ConfigError

# Names of variables and files, not secrets.
TOKEN_ENV = "AGGREGATOR_EDITOR_TOKEN"  # noqa: S105
SECRET_ENV = "AGGREGATOR_SECRET_KEY"  # noqa: S105
SECRET_FILE = ".aggregator-secret"  # noqa: S105
TOKEN_EDITOR = "token"  # noqa: S105
MIN_TOKEN_CHARS = 16
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
LOGIN_FAILURES = 5
LOGIN_WINDOW = timedelta(minutes=15)
_THROTTLED_ADDRESSES = 10_000  # memory bound: past it, the address seen least recently is forgotten


# -- password hashes ----------------------------------------------------------------------------------


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A password hash in the format above, for feeds.yaml."""
    if not password:
        raise ConfigError("an empty password cannot be hashed")
    salt = salt or secrets.token_bytes(16)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches `encoded` (constant-time comparison)."""
    n, r, p, salt, key = _parse_hash(encoded)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), key)


def _parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    parts = encoded.split("$")
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
        if n < 2 or n & (n - 1) or not (0 < r <= 64 and 0 < p <= 16) or len(key) < 16 or not salt:
            raise ValueError
    except (ValueError, binascii.Error):
        raise ConfigError(
            "password_hash is not a hash made by `aggregator hash-password` (scrypt$n$r$p$salt$key)"
        ) from None
    return n, r, p, salt, key


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32)


# -- who is who -----------------------------------------------------------------------------------------


class Authenticator:
    """Checks a login (name + password, or the token) and an API bearer token."""

    def __init__(self, editors: Sequence[Editor], token: str | None) -> None:
        self.editors = {e.name: e.password_hash for e in editors}
        for name, encoded in self.editors.items():
            try:
                _parse_hash(encoded)
            except ConfigError as exc:
                raise ConfigError(f"review.editors {name!r}: {exc}") from None
        if token is not None and len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"{TOKEN_ENV} is too short ({len(token)} characters; use {MIN_TOKEN_CHARS} or more)")
        self.token = token

    @classmethod
    def from_settings(cls, settings: Settings, env: Mapping[str, str]) -> Authenticator:
        return cls(settings.model.review.editors, env.get(TOKEN_ENV) or None)

    @property
    def enabled(self) -> bool:
        """Whether anyone can sign in at all (otherwise the page is read-only for everyone)."""
        return bool(self.editors) or self.token is not None

    def login(self, name: str, password: str) -> str | None:
        """The editor's name when the credentials are good, else None."""
        name = " ".join(name.split())[:200]
        if name in self.editors:
            return name if verify_password(password, self.editors[name]) else None
        if self._is_token(password):
            return name or TOKEN_EDITOR
        return None

    def credential(self, name: str) -> str | None:
        """A fingerprint of what lets `name` sign in now (their password hash, or the token). A
        session remembers it, so changing a password or the token, or removing an editor, ends
        the sessions made with the old one."""
        secret = self.editors.get(name) or self.token
        return hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else None

    def bearer(self, authorization: str | None) -> str | None:
        """The editor behind an `Authorization: Bearer <token>` header, else None."""
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and self._is_token(value.strip()):
            return TOKEN_EDITOR
        return None

    def _is_token(self, value: str) -> bool:
        return self.token is not None and hmac.compare_digest(value.encode(), self.token.encode())


# -- sessions -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    editor: str
    csrf: str
    expires: datetime
    credential: str = ""  # Authenticator.credential(editor) when the session began

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest((presented or "").encode(), self.csrf.encode())


class SessionSigner:
    """Signed, expiring session cookies (HMAC-SHA256); a tampered or expired one reads as None."""

    def __init__(self, secret: bytes, lifetime: timedelta = timedelta(days=7)) -> None:
        if len(secret) < 16:
            raise ConfigError(f"{SECRET_ENV} is too short (use 32 random characters or more)")
        self.secret = secret
        self.lifetime = lifetime

    def issue(self, editor: str, now: datetime, credential: str = "") -> tuple[str, Session]:
        session = Session(editor, secrets.token_urlsafe(24), now + self.lifetime, credential)
        fields = {"e": editor, "c": session.csrf, "x": session.expires.timestamp(), "f": credential}
        payload = _b64(json.dumps(fields).encode())
        return f"{payload}.{self._sign(payload)}", session

    def read(self, cookie: str | None, now: datetime) -> Session | None:
        payload, _, signature = (cookie or "").partition(".")
        if not payload or not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            expires = datetime.fromtimestamp(float(data["x"]), now.tzinfo)
            session = Session(str(data["e"]), str(data["c"]), expires, str(data.get("f", "")))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        return session if session.expires > now else None

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, payload.encode(), hashlib.sha256).digest())


def load_secret(settings: Settings, env: Mapping[str, str]) -> bytes:
    """AGGREGATOR_SECRET_KEY, else the key kept beside feeds.yaml (created on first use)."""
    configured = env.get(SECRET_ENV)
    if configured:
        return configured.encode()
    path = settings.path.resolve().parent / SECRET_FILE
    try:
        return _read_or_create_secret(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot keep the session key there ({exc.strerror}); set {SECRET_ENV}") from None


def _read_or_create_secret(path: Path) -> bytes:
    if not path.exists():
        # Written under a temporary name, then linked: two servers starting at once agree on one key.
        temporary = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_urlsafe(48).encode())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    secret = path.read_bytes().strip()
    if len(secret) < 32:
        raise ConfigError(f"{path}: the session key is damaged (delete the file to make a new one)")
    return secret


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- guessing -----------------------------------------------------------------------------------------


class LoginThrottle:
    """Failed sign-ins per attempt key (client address and name), in this process's memory."""

    def __init__(self, failures: int = LOGIN_FAILURES, window: timedelta = LOGIN_WINDOW) -> None:
        self.failures = failures
        self.window = window
        self._seen: dict[str, deque[datetime]] = {}  # insertion order = least recently failed first
        self._lock = threading.Lock()

    def wait(self, address: str, now: datetime) -> float:
        """Seconds before `address` may try again (0: now)."""
        with self._lock:
            recent = self._recent(address, now)
            if len(recent) < self.failures:
                return 0.0
            return max((recent[0] + self.window - now).total_seconds(), 1.0)

    def failed(self, address: str, now: datetime) -> None:
        with self._lock:
            recent = self._recent(address, now)
            recent.append(now)
            self._seen[address] = self._seen.pop(address, recent)  # now the most recent
            while len(self._seen) > _THROTTLED_ADDRESSES:
                del self._seen[next(iter(self._seen))]

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._seen.pop(address, None)

    def _recent(self, address: str, now: datetime) -> deque[datetime]:
        recent = self._seen.get(address, deque())
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        return recent

