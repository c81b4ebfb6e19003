"""SciTokens and WLCG tokens from a real issuer, through ``lark-transferd``'s HTTP API.

The service checks no token itself: it hands the caller's bearer token to the schedd, whose SciTokens
library fetches the issuer's published keys over https, verifies the token and maps its issuer and
subject to a user with the map file. What is set up here (module scope, on the shared Lark pool) is
what docs/tokens.md tells an admin to do:

- a CA made by the test, trusted inside this run's pool overlay only (``update-ca-certificates`` in
  the chroot; taken out again at the end), which signed the issuer's https certificate and the
  schedd's host certificate;
- an issuer in the "wan" namespace, ``https://203.0.113.2:8443/lark``, serving
  ``/.well-known/openid-configuration`` and its JWKS (one ES256 key), minting with the ``scitokens``
  library;
- the schedd: an SSL host certificate (SciTokens authentication runs inside TLS, and the client checks
  the schedd's host name), ``CERTIFICATE_MAPFILE`` lines for two subjects, ``SCITOKENS_SERVER_AUDIENCE``;
- ``lark-transferd`` in the pool, with one endpoint whose profile no slot offers: a transfer stays
  in the queue, which is all that authentication needs, and is canceled from there.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import ipaddress
import json
import re
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lark import netns
from lark.transfer.tokens import explain_refusal, token_claims
from tests.pool.harness import USER, Pool
from tests.pool.larkpool import WAN_ADDR, LarkPool
from tests.pool.transferkit import transfer_service
from tests.support import wait_until

pytestmark = pytest.mark.pool

PORT = 8643  # lark-transferd (test_transfer.py's runs on 8642)
ISSUER_PORT = 8443
ISSUER = f"https://{WAN_ADDR}:{ISSUER_PORT}/lark"
AUDIENCE = "https://lark-schedd.lark.test"
KEY_ID = "lark-test-es256"
SCOPE_SCITOKEN = "condor:/READ condor:/WRITE"
# WLCG's compute scopes: the SciTokens library reads create + modify + cancel as condor:/WRITE
SCOPE_WLCG = "compute.read compute.create compute.modify compute.cancel"
OTHER = "other"  # the second mapped user (no Unix account needed: it only reads and cancels)
CONDOR_DIR = "/etc/condor/lark-scitokens"
CONFIG = "78-lark-scitokens.conf"
CA_NAME = "lark-scitokens-test-ca.crt"
ENDPOINTS = f"""\
endpoints:
  parked:
    description: an https endpoint whose movers' profile no slot offers, so its transfers wait in the queue
    protocol: https
    url: http://{WAN_ADDR}:8081/
    site: WAN
    profile: scitokens-parked
"""


def map_file() -> str:
    """The map file: the issuer's ``iss,sub`` (a PCRE; no ``/.../`` around it, see docs/tokens.md) -> user."""
    issuer = re.escape(ISSUER)
    return (f"SCITOKENS ^{issuer},alice$ {USER}\n"
            f"SCITOKENS ^{issuer},bob$ {OTHER}\n")


# ------------------------------------------------------------------ the PKI: a CA, the issuer's and the schedd's certs

@dataclass
class Pki:
    ca: bytes
    issuer_cert: bytes
    issuer_key: bytes
    schedd_cert: bytes
    schedd_key: bytes


def make_pki(schedd_names: list[str]) -> Pki:
    """A CA, the issuer's https certificate (IP address SAN) and the schedd's host certificate (DNS SANs:
    HTCondor's client compares the schedd's host alias with the DNS names only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("Lark test CA")).issuer_name(name("Lark test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, sans: list[x509.GeneralName]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM), pem_key(key)

    issuer_cert, issuer_key = leaf("lark test issuer", [x509.IPAddress(ipaddress.ip_address(WAN_ADDR))])
    schedd_cert, schedd_key = leaf(schedd_names[0], [x509.DNSName(n) for n in schedd_names])
    return Pki(ca.public_bytes(serialization.Encoding.PEM), issuer_cert, issuer_key, schedd_cert, schedd_key)


# ------------------------------------------------------------------ the issuer

def _b64(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()


@dataclass
class Issuer:
    """An OpenID issuer: ``/lark/.well-known/openid-configuration`` and the JWKS it points at, over https in
    the wan namespace, publishing one ES256 key; mints tokens with the ``scitokens`` library."""

    wan: str
    pki: Pki
    requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.key = ec.generate_private_key(ec.SECP256R1())
        numbers = self.key.public_key().public_numbers()
        jwks = {"keys": [{"kty": "EC", "crv": "P-256", "x": _b64(numbers.x), "y": _b64(numbers.y), "kid": KEY_ID,
                          "alg": "ES256", "use": "sig"}]}
        documents = {
            "/lark/.well-known/openid-configuration": {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks",
                                                       "id_token_signing_alg_values_supported": ["ES256"]},
            "/lark/jwks": jwks,
        }
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                seen.append(self.path)
                document = documents.get(self.path)
                if document is None:
                    self.send_error(404)
                    return
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        with tempfile.TemporaryDirectory(prefix="lark-issuer-") as scratch:
            cert, key = Path(scratch, "cert.pem"), Path(scratch, "key.pem")
            cert.write_bytes(self.pki.issuer_cert)
            key.write_bytes(self.pki.issuer_key)
            key.chmod(0o600)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
        # the listening socket is made inside the wan namespace and stays there; serving needs no switch
        self.server = netns.call_in(self.wan, lambda: http.server.ThreadingHTTPServer((WAN_ADDR, ISSUER_PORT),
                                                                                     Handler))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def mint(self, subject: str, *, wlcg: bool = False, audience: str = AUDIENCE, lifetime: int = 1200,
             key: Any = None, key_id: str = KEY_ID) -> str:
        """A SciToken 2.0 (or a WLCG 1.0 token) with iss, sub, aud, scope, ver/wlcg.ver, exp, iat, nbf, jti."""
        import scitokens

        token = scitokens.SciToken(key=key or self.key, key_id=key_id)
        profile = {"wlcg.ver": "1.0"} if wlcg else {"ver": "scitoken:2.0"}
        token.update_claims({"sub": subject, "aud": audience, "scope": SCOPE_WLCG if wlcg else SCOPE_SCITOKEN,
                             **profile})
        return token.serialize(issuer=ISSUER, lifetime=lifetime).decode()


# ------------------------------------------------------------------ the service

@dataclass
class Service:
    lark: LarkPool
    issuer: Issuer

    @property
    def pool(self) -> Pool:
        return self.lark.pool

    def api(self, method: str, path: str, token: str, **kwargs: Any) -> tuple[int, Any]:
        """One HTTP call from inside the pool's namespace with ``Authorization: Bearer <token>``."""
        import requests

        def call() -> tuple[int, Any]:
            r = requests.request(method, f"http://127.0.0.1:{PORT}{path}", timeout=60,
                                 headers={"Authorization": f"Bearer {token}"}, **kwargs)
            return r.status_code, r.json() if r.content else None

        return self.pool.call_in_netns(call)

    def queue(self) -> list[dict[str, Any]]:
        return self.pool.q("true", ["ClusterId", "ProcId", "Owner"])

    def sched_log_size(self) -> int:
        return self.pool.host_path("/var/log/condor/SchedLog").stat().st_size

    def sched_log_since(self, offset: int) -> str:
        with self.pool.host_path("/var/log/condor/SchedLog").open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")


def _trust_ca(pool: Pool, ca: bytes | None) -> None:
    """Add (or, with None, take out) the test CA in the pool overlay's trust store, as an admin would."""
    path = pool.host_path(f"/usr/local/share/ca-certificates/{CA_NAME}")
    if ca is None:
        path.unlink(missing_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(ca)
        path.chmod(0o644)
    pool.run(["update-ca-certificates", "--fresh"], timeout=120)


@pytest.fixture(scope="module")
def service(lark_pool: LarkPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    pool = lark_pool.pool
    # the names a client may know the schedd by: its address's alias is the host name
    names = [pool.config_val(k) for k in ("FULL_HOSTNAME", "HOSTNAME")]
    pki = make_pki(list(dict.fromkeys([*names, "localhost"])))
    issuer = Issuer(lark_pool.wan, pki)
    try:
        _trust_ca(pool, pki.ca)
        pool.write(f"{CONDOR_DIR}/hostcert.pem", pki.schedd_cert, owner="root", mode=0o644)
        pool.write(f"{CONDOR_DIR}/hostkey.pem", pki.schedd_key, owner="root", mode=0o600)
        pool.write(f"{CONDOR_DIR}/mapfile", map_file(), owner="root", mode=0o644)
        pool.add_config(CONFIG, f"""\
# SciTokens for lark-transferd (docs/tokens.md): the schedd's TLS identity, the map file, the audience
AUTH_SSL_SERVER_CERTFILE = {CONDOR_DIR}/hostcert.pem
AUTH_SSL_SERVER_KEYFILE = {CONDOR_DIR}/hostkey.pem
CERTIFICATE_MAPFILE = {CONDOR_DIR}/mapfile
SCITOKENS_SERVER_AUDIENCE = {AUDIENCE}
""")
        pool.reconfig()
        methods = pool.run(["condor_config_val", "-subsystem", "SCHEDD", "SEC_WRITE_AUTHENTICATION_METHODS"],
                           check=False).stdout
        methods = methods if "SCITOKENS" in methods.upper() else pool.config_val("SEC_DEFAULT_AUTHENTICATION_METHODS")
        assert "SCITOKENS" in methods.upper(), f"the schedd does not offer SCITOKENS: {methods}"
        # no slot offers the endpoint's profile: every transfer stays QUEUED
        with transfer_service(lark_pool, tmp_path_factory.mktemp("scitokens-wheel"), ENDPOINTS, profile_names=(),
                              port=PORT):
            yield Service(lark_pool, issuer)
    finally:
        issuer.close()
        pool.remove_config(CONFIG)
        for name in ("hostcert.pem", "hostkey.pem", "mapfile"):
            pool.host_path(f"{CONDOR_DIR}/{name}").unlink(missing_ok=True)
        _trust_ca(pool, None)
        pool.reconfig()


def _tool_with_token(service: Service, argv: list[str], token: str) -> subprocess.CompletedProcess[str]:
    """An HTCondor tool run with only ``token`` to offer (as the service's worker authenticates), straight at the
    schedd."""
    scratch = service.pool.host_path(f"/tmp/lark-scitoken-{time.monotonic_ns()}")
    scratch.mkdir(mode=0o700)
    (scratch / "token").write_text(token + "\n")
    (scratch / "token").chmod(0o600)
    inside = service.pool.chroot_path(scratch)
    none = f"{inside}/none"
    try:
        return service.pool.run(argv, check=False, env={
            "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": "SCITOKENS", "_CONDOR_SCITOKENS_FILE": f"{inside}/token",
            "_CONDOR_SEC_CLIENT_AUTHENTICATION": "REQUIRED", "_CONDOR_SEC_TOKEN_DIRECTORY": none,
            "_CONDOR_SEC_TOKEN_SYSTEM_DIRECTORY": none, "_CONDOR_SEC_PASSWORD_DIRECTORY": none,
            "_CONDOR_SEC_PASSWORD_FILE": none, "_CONDOR_SEC_TOKEN_POOL_SIGNING_KEY_FILE": none})
    finally:
        for child in scratch.iterdir():
            child.unlink()
        scratch.rmdir()


@pytest.mark.parametrize("kind", ["scitoken", "wlcg"])
def test_a_token_from_the_issuer_submits_as_the_mapped_user_and_only_that_user_sees_or_cancels(
        service: Service, kind: str) -> None:
    alice = service.issuer.mint("alice", wlcg=kind == "wlcg")
    bob = service.issuer.mint("bob", wlcg=kind == "wlcg")
    body = {"verb": "delete", "source": f"parked:scitokens/{kind}.bin", "label": f"scitokens-{kind}"}
    status, view = service.api("POST", "/v1/transfers", alice, json=body)
    assert status == 201, view
    assert (view["owner"], view["state"], view["label"]) == (USER, "QUEUED", f"scitokens-{kind}")
    transfer_id = view["id"]
    cluster = int(transfer_id.split(".")[0])
    # the schedd saw the token: the job is the mapped user's, and the ad names the token it came with
    [ad] = service.pool.q(f"ClusterId == {cluster}", ["Owner", "User", "AuthTokenIssuer", "AuthTokenSubject",
                                                      "AuthTokenId", "LarkNetworkProfile"])
    assert (ad["Owner"], ad["User"]) == (USER, f"{USER}@lark.test"), ad
    claims = token_claims(alice) or {}
    assert (ad["AuthTokenIssuer"], ad["AuthTokenSubject"], ad["AuthTokenId"]) == (ISSUER, "alice", claims["jti"]), ad
    assert ad["LarkNetworkProfile"] == "scitokens-parked"
    # the schedd's SciTokens library asked the issuer for its keys (the first time; then it has them cached)
    assert "/lark/.well-known/openid-configuration" in service.issuer.requests
    assert "/lark/jwks" in service.issuer.requests

    status, got = service.api("GET", f"/v1/transfers/{transfer_id}", alice)
    assert status == 200 and got["state"] == "QUEUED" and got["owner"] == USER, got
    status, page = service.api("GET", "/v1/transfers?label=" + f"scitokens-{kind}", alice)
    assert status == 200 and [t["id"] for t in page["transfers"]] == [transfer_id], page
    # the user's own client, with the token in a file
    token_file = f"{service.pool.home(USER)}/.{kind}-token"
    service.pool.write(token_file, alice + "\n", owner=USER, mode=0o600)
    shown = service.pool.run(["/opt/lark/bin/lark", "transfer", "--url", f"http://127.0.0.1:{PORT}", "--token-file",
                              token_file, "status", transfer_id], user=USER)
    assert shown.stdout.split()[:2] == [transfer_id, "QUEUED"], shown.stdout

    # another mapped user's token: the transfer does not exist for them, and they cannot cancel it
    assert service.api("GET", f"/v1/transfers/{transfer_id}", bob)[0] == 404
    assert service.api("DELETE", f"/v1/transfers/{transfer_id}", bob)[0] == 404
    status, page = service.api("GET", "/v1/transfers", bob)
    assert status == 200 and page["transfers"] == [], page
    # nor straight at the schedd, which knows bob's token as user "other", not the job's owner: HTCondor 25
    # answers as if the job did not exist ("Couldn't find/remove all jobs in cluster N", once "There are no
    # jobs in the queue" with exit 0), never "permission denied", and the job stays
    removed = _tool_with_token(service, ["condor_rm", str(cluster)], bob)
    assert "AUTHENTICATE" not in removed.stderr, removed.stderr  # bob's token was accepted, as "other"
    assert "marked for removal" not in removed.stdout, removed.stdout + removed.stderr
    assert service.pool.q(f"ClusterId == {cluster}", ["JobStatus"])[0]["JobStatus"] == 1

    status, canceled = service.api("DELETE", f"/v1/transfers/{transfer_id}", alice)
    assert status == 200 and canceled["state"] == "CANCELED", canceled
    assert USER in str(canceled.get("reason")), canceled


def _rogue_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


# name -> (how to mint it, what the schedd's log says of it, what explain_refusal reads in it)
REFUSED: dict[str, tuple[Callable[[Issuer], str], str, str]] = {
    "expired": (lambda i: i.mint("alice", lifetime=-600), "token expired", "the token expired at"),
    "signed by a key the issuer does not publish, under its key id": (
        lambda i: i.mint("alice", key=_rogue_key()), "invalid signature", f"issuer {ISSUER}, subject alice"),
    "signed by a key the issuer does not publish, under another key id": (
        lambda i: i.mint("alice", key=_rogue_key(), key_id="not-published"), "Key ID is not published by the issuer",
        f"issuer {ISSUER}, subject alice"),
    "of a subject the map file does not map": (
        lambda i: i.mint("mallory"), f"Failed to map SCITOKENS authenticated identity '{ISSUER},mallory'",
        "subject mallory"),
    "WLCG, for another audience": (
        lambda i: i.mint("alice", wlcg=True, audience="https://elsewhere.example"), "'aud' claim verification failed",
        "audience https://elsewhere.example, WLCG profile 1.0"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_token_is_a_401_with_a_json_error_and_never_reaches_the_queue(service: Service, case: str) -> None:
    mint, logged, explained = REFUSED[case]
    token = mint(service.issuer)
    # what the 401 can tell the user, read from the token's own (unverified) claims
    assert explained in (explain_refusal(token, time.time()) or ""), case
    before = service.queue()
    log_at = service.sched_log_size()
    body = {"verb": "delete", "source": "parked:scitokens/refused.bin", "label": "refused"}
    status, error = service.api("POST", "/v1/transfers", token, json=body)
    assert status == 401, (case, error)
    assert error["error"]["field"] == "Authorization" and explained in error["error"]["message"], error
    status, error = service.api("GET", "/v1/transfers", token)
    assert status == 401 and error["error"]["field"] == "Authorization", (case, error)
    assert service.queue() == before
    # refused by the schedd, for this token's own reason (not, say, a TLS failure on the way)
    wait_until(f"the schedd to log a refused authentication for the token {case}",
               lambda: "DC_AUTHENTICATE: required authentication" in service.sched_log_since(log_at), 10, 0.2)
    refusals = [line for line in service.sched_log_since(log_at).splitlines() if "SCITOKENS" in line]
    assert any(logged in line for line in refusals), (case, refusals)
