"""Make the key files in this folder and print PyJWT-made tokens and JWKs.

Run in a throwaway venv (`pip install pyjwt cryptography`) from this folder and
paste the printed constants into `../tests.rs`. Existing key files are reused;
delete them to make new keys (and then paste every constant again). ES256
signatures are randomised, so its token changes on every run.
"""

import json
import os

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

PRIV = dict(encoding=serialization.Encoding.PEM, format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption())
PUB = dict(encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo)


def write(name, data):
    with open(name, "wb") as f:
        f.write(data)


def load_or_make(name, make):
    if not os.path.exists(f"{name}.pem"):
        key = make()
        write(f"{name}.pem", key.private_bytes(**PRIV))
        write(f"{name}.pub.pem", key.public_key().public_bytes(**PUB))
    with open(f"{name}.pem", "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


keys = {
    "ed25519": load_or_make("ed25519", ed25519.Ed25519PrivateKey.generate),
    "p256": load_or_make("p256", lambda: ec.generate_private_key(ec.SECP256R1())),
    "rsa2048": load_or_make("rsa2048", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
}
# Too small for us: only its public half is kept, to be refused.
if not os.path.exists("rsa1024.pub.pem"):
    write("rsa1024.pub.pem", rsa.generate_private_key(public_exponent=65537, key_size=1024)
          .public_key().public_bytes(**PUB))

HS_SECRET = b"pyjwt-interop-secret-0123456789abcdef"  # 37 bytes
CLAIMS = {
    "iss": "https://py.example", "sub": "user-42", "aud": "rampart-api",
    "iat": 1700000000, "nbf": 1700000000, "exp": 4102444800, "jti": "py-1",
    "roles": ["admin"], "scope": "read write", "tier": "gold", "ver": 3,
}
print(f'const PY_HS256: &str = "{jwt.encode(CLAIMS, HS_SECRET, algorithm="HS256")}";')
other = dict(CLAIMS, aud=["other", "rampart-api"], scp=["read", "admin:all"])
del other["scope"]
print(f'const PY_HS256_AUD_ARRAY_SCP: &str = "{jwt.encode(other, HS_SECRET, algorithm="HS256")}";')
for name, alg in [("ed25519", "EdDSA"), ("p256", "ES256"), ("rsa2048", "RS256")]:
    token = jwt.encode(CLAIMS, keys[name], algorithm=alg, headers={"kid": f"py-{name}"})
    print(f'const PY_{alg.upper()}: &str = "{token}";')

# The public JWKs as PyJWT writes them, to compare with ours.
for name, alg in [("ed25519", "EdDSA"), ("p256", "ES256"), ("rsa2048", "RS256")]:
    jwk = json.loads(jwt.get_algorithm_by_name(alg).to_jwk(keys[name].public_key()))
    fields = {k: v for k, v in jwk.items() if k in ("x", "y", "n", "e")}
    print(f"const PY_JWK_{name.upper()}: &str = r#'{json.dumps(fields, sort_keys=True)}'#;".replace("'", '"'))
