"""DSSE envelopes with an implementation we did not write: securesystemslib.

    python dsse.py keygen PRIVATE.pem PUBLIC.pem
    python dsse.py sign PRIVATE.pem KEYID PAYLOAD_TYPE PAYLOAD_FILE ENVELOPE_OUT
    python dsse.py verify ENVELOPE PUBLIC.pem KEYID THRESHOLD

`sign` and `verify` use securesystemslib's Envelope (PAE, base64, DER
ECDSA P-256 SHA-256 as its ecdsa-sha2-nistp256 scheme makes them). `verify`
exits 0 when the envelope verifies and prints the payload type.
"""

import json
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, SSlibKey

SCHEME = "ecdsa-sha2-nistp256"


def keygen(private_path, public_path):
    key = ec.generate_private_key(ec.SECP256R1())
    with open(private_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(public_path, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))


def public_key(path, keyid):
    with open(path, "rb") as f:
        pub = serialization.load_pem_public_key(f.read())
    return SSlibKey.from_crypto(pub, keyid=keyid, scheme=SCHEME)


def sign(private_path, keyid, payload_type, payload_path, out_path):
    with open(private_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    signer = CryptoSigner(key, SSlibKey.from_crypto(key.public_key(), keyid=keyid, scheme=SCHEME))
    with open(payload_path, "rb") as f:
        payload = f.read()
    envelope = Envelope(payload, payload_type, {})
    envelope.sign(signer)
    with open(out_path, "w") as f:
        json.dump(envelope.to_dict(), f)


def verify(envelope_path, public_path, keyid, threshold):
    with open(envelope_path) as f:
        envelope = Envelope.from_dict(json.load(f))
    envelope.verify([public_key(public_path, keyid)], int(threshold))
    print(envelope.payload_type)


if __name__ == "__main__":
    commands = {"keygen": (keygen, 2), "sign": (sign, 5), "verify": (verify, 4)}
    if len(sys.argv) < 2 or sys.argv[1] not in commands or len(sys.argv) - 2 != commands[sys.argv[1]][1]:
        sys.exit(__doc__)
    commands[sys.argv[1]][0](*sys.argv[2:])
