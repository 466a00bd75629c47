"""The probe's PyMySQL runs without `cryptography` until a login needs RSA, then encrypts correctly."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support import ROOT

SCRIPT = textwrap.dedent("""
    import sys
    from launcher.supervisor.dbprobe import _auth
    assert "cryptography" not in sys.modules, "cryptography was imported with the probe"

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    salt = b"0123456789abcdefghij"
    sealed = _auth.sha2_rsa_encrypt(b"s3cret", salt, pem)
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    plain = key.decrypt(sealed, oaep)
    print(bytes(b ^ salt[i % len(salt)] for i, b in enumerate(plain)))
""")


def test_rsa_login_loads_cryptography_on_first_use_and_encrypts_the_password() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == repr(b"s3cret\0")
