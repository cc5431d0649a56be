"""Makes password hashes with passlib, for the import interop test.

Reads {"password": ...} on stdin; prints one JSON line per scheme,
{"username", "password_hash", "scheme"}, in the format `rampart user import`
reads (plus "scheme", which the test removes). argon2 is included only when
passlib has an argon2 backend (argon2-cffi).
"""
import json
import sys

from passlib.hash import argon2, bcrypt, django_pbkdf2_sha256, pbkdf2_sha256

password = json.load(sys.stdin)["password"]
schemes = {
    "bcrypt": bcrypt.using(rounds=4),
    "pbkdf2_sha256": pbkdf2_sha256.using(rounds=1000),
    "django_pbkdf2_sha256": django_pbkdf2_sha256.using(rounds=1000),
}
if argon2.has_backend():
    schemes["argon2"] = argon2.using(memory_cost=1024, rounds=1, parallelism=1)
for name, handler in schemes.items():
    print(json.dumps({"username": "user_" + name, "password_hash": handler.hash(password), "scheme": name}))
