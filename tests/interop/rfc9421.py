"""RFC 9421 interoperability: an independent implementation (the
`http-message-signatures` package on PyPI) signs and verifies requests the
way a mesh node written in Python would, so the conformance suite can check
that the coordinator and our signer speak the standard and not a private
profile of it.

Reads one JSON object on stdin and writes one on stdout:

  {"op": "sign", "method", "url", "body_b64", "private_key_pem", "keyid",
   "nonce", "created", "label", "components": [...]}
      -> {"headers": {"content-digest", "signature-input", "signature"}}
  {"op": "verify", "method", "url", "headers": {...}, "body_b64",
   "public_key_pem", "keyid", "require": [...]}
      -> {"ok": true, "covered": [...], "keyid": ...} or {"ok": false, "error": ...}

The test command installs the package (scripts/setup-tools.sh); nothing of
this file is used by the product.
"""

import base64
import datetime
import json
import sys

from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    MappingKeyResolver,
    algorithms,
)
from cryptography.hazmat.primitives import serialization


class Request:
    """The message interface the library resolves components from."""

    def __init__(self, method, url, headers):
        self.method = method
        self.url = url
        self.headers = dict(headers)


def sign(req):
    key = serialization.load_pem_private_key(req["private_key_pem"].encode(), password=None)
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ECDSA_P256_SHA256,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={req["keyid"]: key}),
    )
    message = Request(req["method"], req["url"], {"content-type": "application/json"})
    signer.sign(
        message,
        key_id=req["keyid"],
        created=datetime.datetime.fromtimestamp(req["created"], tz=datetime.timezone.utc),
        nonce=req["nonce"],
        label=req.get("label", "pyhms"),
        covered_component_ids=tuple(req["components"]),
        body=base64.b64decode(req["body_b64"]),
    )
    wanted = ("content-digest", "signature-input", "signature")
    return {"headers": {k.lower(): v for k, v in message.headers.items() if k.lower() in wanted}}


def verify(req):
    key = serialization.load_pem_public_key(req["public_key_pem"].encode())
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.ECDSA_P256_SHA256,
        key_resolver=MappingKeyResolver(public_keys={req["keyid"]: key}, private_keys={}),
    )
    message = Request(req["method"], req["url"], req["headers"])
    try:
        results = verifier.verify(
            message,
            max_age=datetime.timedelta(minutes=5),
            require_components=tuple(req.get("require", ())),
            body=base64.b64decode(req["body_b64"]),
        )
    except Exception as e:  # the library's refusals, reported by name
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return {
        "ok": True,
        "covered": [str(c) for r in results for c in r.covered_components],
        "keyid": results[0].parameters.get("keyid") if results else None,
    }


def main():
    req = json.load(sys.stdin)
    out = {"sign": sign, "verify": verify}[req["op"]](req)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
