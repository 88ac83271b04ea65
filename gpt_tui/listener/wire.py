"""The wire between `gpt_tui.listen` and `gpt-tui attach`: where the endpoints live, the
token of a TCP endpoint, its handshake, and the framing (JSON lines, and byte blobs that
follow a line naming their size).

A Unix socket needs no token: its mode (0600, in a 0700 folder) and its peer's
credentials say who connects. TCP has neither, so a TCP endpoint has a random token, and
both ends prove they know it without sending it: the run sends a nonce, the client answers
HMAC-SHA256(token, "client" + the run's nonce + its own) with its nonce, the run checks it
(in constant time) and answers HMAC-SHA256(token, "server" + ...), which the client checks
in turn. The client thus knows it talks to the run that printed the token, not to whatever
else listens on that port, before it opens anything the run sends.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import socket
import struct
import tempfile
from pathlib import Path
from typing import IO, Any

from ..errors import GptTuiError

LINE_LIMIT = 1 << 20  # a request or answer line; blobs are sized by the line before them
HANDSHAKE_SECONDS = 10.0


class WireError(GptTuiError):
    """The other end broke the protocol or went away."""


class WireClosed(WireError):
    """The other end closed the connection."""


def socket_folder() -> Path:
    """The folder of the endpoints: the user's runtime folder, else one in /tmp (0700)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "gpt-tui" if runtime else Path(f"/tmp/gpt-tui-{os.getuid()}")
    folder = base / "runs"
    for level in (base, folder):  # one at a time: parents=True would make base 0755
        level.mkdir(mode=0o700, exist_ok=True)
    for level in (base, folder):
        if level.stat().st_uid != os.getuid() or level.stat().st_mode & 0o077:
            raise GptTuiError(f"{level} is not private to you (owner and mode 0700): remove it")
    return folder


def peer_uid(conn: socket.socket) -> int | None:
    """The user id of the process at the other end (Linux SO_PEERCRED), or None."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None or conn.family != socket.AF_UNIX:
        return None
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option, 12))
    return uid


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_unix(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if path.exists():
        path.unlink()
    old = os.umask(0o177)
    try:
        server.bind(str(path))  # created 0600
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    server.listen(2)
    return server


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    try:
        server.bind((host, port))
    except OSError as err:
        server.close()
        raise GptTuiError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    server.listen(2)
    return server


# -- the token ----------------------------------------------------------------------------


def new_token() -> str:
    return secrets.token_urlsafe(32)


def write_endpoint_file(path: Path, record: dict[str, Any]) -> None:
    """`record` (host, port, token, pid) as JSON in a 0600 file, written atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_endpoint_file(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and all(
        isinstance(record.get(k), t) for k, t in (("host", str), ("port", int), ("token", str))
    )
    return record if ok else None


def _proof(token: str, side: bytes, first: str, second: str) -> str:
    message = side + bytes.fromhex(first) + bytes.fromhex(second)
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def server_handshake(conn: socket.socket, reader: IO[bytes], token: str) -> str | None:
    """The run's side: None when the client proved the token, else why not (one line)."""
    mine = secrets.token_hex(32)
    send(conn, {"challenge": mine})
    answer = receive(reader)
    theirs, proof = answer.get("nonce"), answer.get("proof")
    if not isinstance(theirs, str) or not isinstance(proof, str) or len(theirs) != 64:
        return "no token given"
    try:
        want = _proof(token, b"client", mine, theirs)
    except ValueError:
        return "a malformed answer"
    if not hmac.compare_digest(want, proof):
        return "wrong token"
    send(conn, {"proof": _proof(token, b"server", theirs, mine)})
    return None


def client_handshake(conn: socket.socket, reader: IO[bytes], token: str) -> None:
    """The client's side; raises WireError when either end does not know the token."""
    first = receive(reader)
    challenge = first.get("challenge")
    if not isinstance(challenge, str) or len(challenge) != 64:
        raise WireError(f"the endpoint is not a gpt-tui run: {_short(first)}")
    mine = secrets.token_hex(32)
    send(conn, {"nonce": mine, "proof": _proof(token, b"client", challenge, mine)})
    answer = receive(reader)
    if "error" in answer:
        raise WireError(f"the run refused: {answer['error']}")
    proof = answer.get("proof")
    if not isinstance(proof, str) or not hmac.compare_digest(
        proof, _proof(token, b"server", mine, challenge)
    ):
        raise WireError("the endpoint did not prove it knows the token: not the run you meant")


# -- framing ------------------------------------------------------------------------------


def send(conn: socket.socket, message: dict[str, Any], blob: bytes = b"") -> None:
    conn.sendall((json.dumps(message) + "\n").encode() + blob)


def receive(reader: IO[bytes]) -> dict[str, Any]:
    """One JSON line; WireError if the other end went away or sent something else."""
    line = reader.readline(LINE_LIMIT)
    if not line:
        raise WireClosed("the other end closed the connection")
    if not line.endswith(b"\n"):
        raise WireError(f"a line longer than {LINE_LIMIT} bytes")
    try:
        message = json.loads(line)
    except ValueError:
        raise WireError(f"not a JSON line: {_short(line)}") from None
    if not isinstance(message, dict):
        raise WireError(f"not a JSON object: {_short(message)}")
    return message


def receive_blob(reader: IO[bytes], size: Any, limit: int) -> bytes:
    """`size` bytes that follow a line, refused above `limit` before any is read."""
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= limit:
        raise WireError(f"a blob of {size!r} bytes (at most {limit})")
    data = reader.read(size)
    if len(data) != size:
        raise WireError("the other end closed the connection in the middle of a blob")
    return data


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
