"""Tokens and roles (ops_api/auth.py), without a server: the authorization matrix against the real
API and services is tests/integration/test_api_auth.py."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from core.settings import Settings
from ops_api.auth import ANALYSE, READ, ROLES, TRAIN, AuthNotConfigured, auth_from, mint


def test_a_minted_token_carries_its_role_and_is_checked_with_the_same_secret():
    settings = Settings(jwt_secret="s3cret")
    assert auth_from(settings).claims_of(mint(settings, "analyst", 60))["role"] == "analyst"


@pytest.mark.parametrize("token, error", [
    (lambda s: mint(Settings(jwt_secret="another"), "admin", 60), jwt.InvalidSignatureError),
    (lambda s: jwt.encode({"role": "admin", "exp": int(time.time()) - 5}, "s3cret"), jwt.ExpiredSignatureError),
    (lambda s: jwt.encode({"role": "admin"}, "s3cret"), jwt.MissingRequiredClaimError),
    (lambda s: jwt.encode({"role": "root", "exp": int(time.time()) + 60}, "s3cret"), jwt.InvalidTokenError),
    (lambda s: jwt.encode({"role": "admin", "exp": int(time.time()) + 60}, "s3cret", algorithm="HS512"),
     jwt.InvalidAlgorithmError),
    (lambda s: "not.a.jwt", jwt.DecodeError),
])
def test_a_token_signed_elsewhere_expired_without_expiry_or_role_or_in_another_algorithm_is_refused(token, error):
    settings = Settings(jwt_secret="s3cret")
    with pytest.raises(error):
        auth_from(settings).claims_of(token(settings))


def test_rs256_tokens_are_signed_with_the_private_key_and_checked_with_the_public_one(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public_path = tmp_path / "public.pem"
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    settings = Settings(jwt_algorithm="RS256", jwt_public_key=str(public_path))
    token = mint(settings, "ml-engineer", 60, private_key=private)
    assert auth_from(settings).claims_of(token)["role"] == "ml-engineer"
    with pytest.raises(jwt.InvalidTokenError):  # an HS256 token made with the public key as its secret
        auth_from(settings).claims_of(jwt.encode({"role": "admin", "exp": int(time.time()) + 60}, "x"))


def test_without_a_key_the_api_refuses_to_start_unless_auth_is_disabled_explicitly():
    with pytest.raises(AuthNotConfigured, match="FRAUD_JWT_SECRET"):
        auth_from(Settings())
    with pytest.raises(AuthNotConfigured, match="FRAUD_JWT_PUBLIC_KEY"):
        auth_from(Settings(jwt_algorithm="RS256"))
    disabled = auth_from(Settings(auth="disabled"))
    assert not disabled.enabled and disabled.describe()["mode"] == "disabled"


def test_viewers_read_analysts_analyse_ml_engineers_train_and_admins_do_everything():
    assert ROLES == {"viewer": {READ}, "analyst": {READ, ANALYSE}, "ml-engineer": {READ, TRAIN},
                     "admin": {READ, ANALYSE, TRAIN}}


def test_minting_refuses_an_unknown_role_a_non_positive_ttl_and_a_missing_secret():
    with pytest.raises(ValueError, match="role"):
        mint(Settings(jwt_secret="s"), "root", 60)
    with pytest.raises(ValueError, match="ttl"):
        mint(Settings(jwt_secret="s"), "viewer", 0)
    with pytest.raises(ValueError, match="FRAUD_JWT_SECRET"):
        mint(Settings(), "viewer", 60)


@pytest.mark.parametrize("command", [["api"], ["worker"]])
def test_fraud_api_and_worker_exit_at_once_naming_the_missing_key(command, monkeypatch):
    from fraud.cli import main

    monkeypatch.delenv("FRAUD_JWT_SECRET", raising=False)
    monkeypatch.delenv("FRAUD_AUTH", raising=False)
    monkeypatch.setenv("FRAUD_API_PORT", "5999")
    with pytest.raises(SystemExit, match="FRAUD_JWT_SECRET .* or FRAUD_AUTH=disabled"):
        main(command)
