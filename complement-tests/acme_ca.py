"""An ACME test CA for test_acme.py: acme2certifier (PyPI) over HTTPS on
loopback, with a CA made here. Run with .venv-acme's python:

    acme_ca.py --workdir DIR --port PORT [--cert-seconds N]

It prints `READY <directory URL> <CA certificate>` once it listens.
acme2certifier validates TLS-ALPN-01 on port 443 of the identifier (the
tests use the IP identifier 127.0.0.1), and the answer to the challenge
POST already says whether validation passed.
"""

import argparse
import datetime
import ipaddress
import os
import socketserver
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

args = argparse.ArgumentParser()
args.add_argument("--workdir", required=True)
args.add_argument("--port", type=int, required=True)
args.add_argument("--cert-seconds", type=int, default=0, help="leaf lifetime in seconds (default: 7 days)")
args = args.parse_args()

work = os.path.abspath(args.workdir)
os.makedirs(f"{work}/certs", exist_ok=True)
now = datetime.datetime.now(datetime.timezone.utc)


def save(path: str, key, cert) -> None:
    with open(path + ".key", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(path + ".pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


# The CA that signs what the ACME server issues (and its own HTTPS).
ca_key = ec.generate_private_key(ec.SECP256R1())
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conduit test ACME CA")])
ca_cert = (
    x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
    .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
    .sign(ca_key, hashes.SHA256())
)
save(f"{work}/ca", ca_key, ca_cert)
https_key = ec.generate_private_key(ec.SECP256R1())
https_cert = (
    x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
    .issuer_name(ca_name).public_key(https_key.public_key()).serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
    .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    .sign(ca_key, hashes.SHA256())
)
save(f"{work}/https", https_key, https_cert)

# Lifetimes under a day need a CA handler that says so: the stock one
# counts whole days.
handler = "acme2certifier.cahandlers.openssl_ca_handler"
if args.cert_seconds:
    handler = f"{work}/short_lived_ca_handler.py"
    with open(handler, "w") as f:
        f.write(
            "import datetime\n"
            "from acme2certifier.cahandlers.openssl_ca_handler import CAhandler as Stock\n"
            "class CAhandler(Stock):\n"
            "    def _certexpiry_date_default(self):\n"
            "        return datetime.datetime.now(datetime.timezone.utc)"
            f" + datetime.timedelta(seconds={args.cert_seconds})\n"
        )

with open(f"{work}/acme_srv.cfg", "w") as f:
    f.write(f"""[DEFAULT]
debug: False
[Nonce]
nonce_check_disable: False
[Account]
contact_check_disable: True
[CAhandler]
handler_module: {handler}
issuing_ca_key: {work}/ca.key
issuing_ca_cert: {work}/ca.pem
issuing_ca_crl: {work}/ca.crl
cert_save_path: {work}/certs
cert_validity_days: 7
[DBhandler]
handler: wsgi
dbfile: {work}/acme_srv.db
[Challenge]
challenge_validation_disable: False
challenge_validation_timeout: 10
[Order]
tnauthlist_support: False
""")
# The app reads its config when imported.
os.environ["ACME_SRV_CONFIGFILE"] = f"{work}/acme_srv.cfg"
from wsgiref.simple_server import WSGIServer, make_server  # noqa: E402

from acme2certifier.share import acme2certifier_wsgi as acme  # noqa: E402


class ThreadedServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def application(environ, start_response):
    # The app builds its URLs from the scheme it is told.
    environ["wsgi.url_scheme"] = "https"
    return acme.application(environ, start_response)


server = make_server("127.0.0.1", args.port, application, server_class=ThreadedServer,
                     handler_class=acme.get_handler_cls())
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(f"{work}/https.pem", f"{work}/https.key")
server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
print(f"READY https://127.0.0.1:{args.port}/directory {work}/ca.pem", flush=True)
server.serve_forever()
