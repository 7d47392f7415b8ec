"""A model origin over HTTPS for the GPU host's resolver tests.

Serves the files under --root with Python's own TLS stack (ssl) and a
certificate chain made here with `cryptography`: a throwaway CA (written to
--ca as PEM, which the host is told to trust) and a leaf for 127.0.0.1 and
localhost. The first path segment chooses how the origin behaves, so a
test can play a broken or hostile mirror:

  /ok/<path>        the file
  /truncate/<path>  announces the full length, sends half, then closes
  /oversize/<path>  the file followed by a megabyte more
  /redirect/<path>  302 to plain http on the same host
  /missing/<path>   404

Prints "PORT <n>" once listening; serves until killed.
"""

import argparse
import datetime
import http.server
import ipaddress
import os
import ssl
import sys
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def chain(ca_path):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgecoder test model origin CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    with open(ca_path, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    d = tempfile.mkdtemp()
    cert_file, key_file = os.path.join(d, "leaf.pem"), os.path.join(d, "leaf.key")
    with open(cert_file, "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_file, key_file


def handler(root):
    class Origin(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def do_GET(self):
            parts = self.path.lstrip("/").split("/", 1)
            mode, rest = (parts + [""])[:2]
            full = os.path.realpath(os.path.join(root, rest))
            if not full.startswith(os.path.realpath(root) + os.sep) or not os.path.isfile(full):
                mode = "missing"
            if mode == "missing":
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            if mode == "redirect":
                self.send_response(302)
                self.send_header("location", f"http://127.0.0.1:{self.server.server_port}/ok/{rest}")
                self.send_header("content-length", "0")
                self.end_headers()
                return
            with open(full, "rb") as f:
                body = f.read()
            if mode == "oversize":
                body += b"\0" * (1 << 20)
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if mode == "truncate":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

    return Origin


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--ca", required=True)
    args = p.parse_args()
    cert, key = chain(args.ca)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler(args.root))
    # A connection this origin cuts on purpose (truncate) is not news.
    server.handle_error = lambda request, client_address: None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"PORT {server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
