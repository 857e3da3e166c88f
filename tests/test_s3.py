"""s3: moto with fresh state per test; real credentials hidden and restored."""

from __future__ import annotations

S3_TESTS = """
    import os
    import boto3
    import httpx
    import pytest

    REAL = {"AWS_ACCESS_KEY_ID": "AKIAREALREALREAL", "AWS_SECRET_ACCESS_KEY": "real-secret",
            "AWS_PROFILE": "production", "AWS_SESSION_TOKEN": "real-token",
            "AWS_ACCESS_KEY": "AKIALEGACYLEGACY", "AWS_SECRET_KEY": "legacy-secret",
            "BOTO_CONFIG": "/home/me/.boto"}

    @pytest.mark.deps("s3")
    @pytest.mark.parametrize("n", range(3))
    def test_fresh_state(deps, n):
        assert deps.s3.client.list_buckets()["Buckets"] == []
        deps.s3.create_bucket(f"bucket-{n}")
        deps.s3.client.put_object(Bucket=f"bucket-{n}", Key="k", Body=b"data")
        # Code under test that builds its own client sees the same state.
        own = boto3.client("s3", region_name="us-east-1")
        assert own.get_object(Bucket=f"bucket-{n}", Key="k")["Body"].read() == b"data"

    @pytest.mark.deps("s3")
    def test_real_credentials_are_hidden(deps):
        for var, real in REAL.items():
            assert os.environ.get(var) != real, var
        creds = boto3.Session().get_credentials().get_frozen_credentials()
        assert creds.access_key != REAL["AWS_ACCESS_KEY_ID"]
        own = deps.s3.session.get_credentials().get_frozen_credentials()
        assert own.access_key == "testing"

    def test_real_credentials_are_restored_after():
        for var, real in REAL.items():
            assert os.environ[var] == real, var

    @pytest.mark.deps("s3")
    def test_endpoint_url_shares_state_with_any_client(deps):
        deps.s3.create_bucket("shared")
        deps.s3.client.put_object(Bucket="shared", Key="a.txt", Body=b"hello")
        url = deps.s3.endpoint_url
        assert url.startswith("http://127.0.0.1:")
        remote = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        assert remote.get_object(Bucket="shared", Key="a.txt")["Body"].read() == b"hello"
        presigned = remote.generate_presigned_url(
            "get_object", Params={"Bucket": "shared", "Key": "a.txt"})
        assert httpx.get(presigned).content == b"hello"
        remote.put_object(Bucket="shared", Key="b.txt", Body=b"from server")
        assert deps.s3.client.get_object(Bucket="shared", Key="b.txt")["Body"].read() == b"from server"

    @pytest.mark.deps("s3")
    def test_endpoint_state_was_reset(deps):
        remote = boto3.client("s3", endpoint_url=deps.s3.endpoint_url, region_name="us-east-1")
        assert remote.list_buckets()["Buckets"] == []

    @pytest.mark.deps("s3", region="eu-west-1")
    def test_region(deps):
        deps.s3.create_bucket("in-ireland")
        loc = deps.s3.client.get_bucket_location(Bucket="in-ireland")["LocationConstraint"]
        assert loc == "eu-west-1"
        assert deps.s3.resource.Bucket("in-ireland").name == "in-ireland"
        assert os.environ["AWS_DEFAULT_REGION"] == "eu-west-1"
"""


def test_s3(project, pytester, monkeypatch):
    project(S3_TESTS)
    for var, value in {"AWS_ACCESS_KEY_ID": "AKIAREALREALREAL",
                       "AWS_SECRET_ACCESS_KEY": "real-secret", "AWS_PROFILE": "production",
                       "AWS_SESSION_TOKEN": "real-token", "AWS_ACCESS_KEY": "AKIALEGACYLEGACY",
                       "AWS_SECRET_KEY": "legacy-secret", "BOTO_CONFIG": "/home/me/.boto"}.items():
        monkeypatch.setenv(var, value)
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=8)
