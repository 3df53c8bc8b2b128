"""Credentials from AWS_PROFILE and a shared credentials file, on a local S3 server that checks them.

moto's server checks access keys against its IAM users once its first
INITIAL_NO_AUTH_ACTION_COUNT requests are done: those create a user, its
key, its policy and the bucket; from then on only that user's key (in the
profile) is accepted.
"""
from __future__ import annotations

import io
import json

import pytest

from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.study.cli import main
from tests.moto_server import moto_server
from tests.store_factory import make_store

SETUP_REQUESTS = 4


@pytest.fixture
def profile_store(tmp_path, monkeypatch):
    """An s3:// store whose only valid key is in profile ``lab`` of a credentials file; no key variables set."""
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)}) as endpoint:
        import boto3

        kw = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "setup",
              "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **kw)
        iam.create_user(UserName="lab")
        key = iam.create_access_key(UserName="lab")["AccessKey"]
        iam.put_user_policy(UserName="lab", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        boto3.client("s3", **kw).create_bucket(Bucket="lab-bucket")
        creds = tmp_path / "credentials"
        creds.write_text(f"[lab]\naws_access_key_id = {key['AccessKeyId']}\n"
                         f"aws_secret_access_key = {key['SecretAccessKey']}\n")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
        monkeypatch.setenv("AWS_PROFILE", "lab")
        yield "s3://lab-bucket/study"


def test_a_store_written_and_read_with_the_profiles_key(profile_store, capsys, monkeypatch):
    ids = make_store(profile_store, seeds=(0, 1), datasets=("digits",))
    assert analyze(profile_store, out=io.StringIO())["analysed"] == 2
    assert open_catalog(profile_store).execute("SELECT count(*) FROM run_summary").fetchone() == (2,)
    assert main(["sql", "--store", profile_store, "SELECT run_id FROM run_summary ORDER BY 1"]) == 0
    out = capsys.readouterr()
    assert all(i in out.out for i in ids), out
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # a key the server does not know: refused
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert main(["status", "--store", profile_store]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dynstudy status: OSError: When listing objects under key 'study/runs/' in bucket "
                          "'lab-bucket': AWS Error INVALID_ACCESS_KEY_ID"), err
