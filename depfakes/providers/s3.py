"""The ``s3`` dependency: moto, with fresh state for every test.

A naive fixture (``mock_aws()`` + ``boto3.client("s3")`` per test) costs 100+ ms, most of
it building the boto3 client and moto's ~1,200 URL patterns. depfakes builds both once
per session and per test only switches moto on, resets its state and hides the
environment's real AWS credentials.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from depfakes.config import Setting
from depfakes.providers.base import Option, Provider, StartContext

if TYPE_CHECKING:
    import boto3
    from mypy_boto3_s3 import S3Client, S3ServiceResource

# Where real credentials could come from; all of it is hidden during a test.
_CREDENTIAL_VARS = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE",
    # Legacy spellings some tools still read (boto 2, older SDKs and CLIs).
    "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_ACCESS_KEY_ID_FILE", "AWS_SECRET_ACCESS_KEY_FILE",
    "AWS_CREDENTIAL_FILE", "AWS_CREDENTIAL_EXPIRATION", "BOTO_CONFIG", "AWS_SSO_SESSION",
)
FAKE_KEY_ID = "testing"
FAKE_SECRET = "testing"


class S3Handle:
    """What a test gets as ``deps.s3``."""

    region: str

    def __init__(self, provider: S3Provider, region: str) -> None:
        self._provider = provider
        self.region = region
        # What release() undoes (set by acquire): moto's mock, the hidden credentials.
        self._undo: tuple[Any, pytest.MonkeyPatch]

    @property
    def session(self) -> boto3.Session:
        """A boto3 Session with fake credentials (reused across tests)."""
        return self._provider.clients(self.region).session

    @property
    def client(self) -> S3Client:
        return self._provider.clients(self.region).client

    @property
    def resource(self) -> S3ServiceResource:
        return self._provider.clients(self.region).resource

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT`` of a moto server sharing this test's state, for non-boto
        clients and presigned URLs. Started on first use."""
        return self._provider.server_url()

    def create_bucket(self, name: str) -> str:
        """Create a bucket in this handle's region and return its name."""
        if self.region == "us-east-1":
            self.client.create_bucket(Bucket=name)
        else:
            self.client.create_bucket(
                Bucket=name,
                CreateBucketConfiguration={"LocationConstraint": self.region},  # type: ignore[typeddict-item]
            )
        return name

    def __repr__(self) -> str:
        return f"<S3Handle region={self.region}>"


class _Clients:
    """boto3 objects for one region; building them is the expensive part, so once."""

    def __init__(self, region: str) -> None:
        import boto3

        self.session = boto3.Session(aws_access_key_id=FAKE_KEY_ID,
                                     aws_secret_access_key=FAKE_SECRET, region_name=region)

    @cached_property
    def client(self) -> S3Client:
        return self.session.client("s3")

    @cached_property
    def resource(self) -> S3ServiceResource:
        return self.session.resource("s3")


def _mock_class() -> Any:
    """moto's MockAWS, reusing its URL patterns across tests when moto's layout allows."""
    from moto.core import models

    if not (hasattr(models, "botocore_stubber") and hasattr(models, "responses_mock")):
        return models.MockAWS  # unknown moto layout: correct, just slower

    class QuickMockAWS(models.MockAWS):
        patterns: ClassVar[list[Any] | None] = None

        def _enable_patching(self, reset: bool = True) -> None:
            if QuickMockAWS.patterns is None:
                super()._enable_patching(reset=reset)
                QuickMockAWS.patterns = list(models.responses_mock.registered())
                return
            models.botocore_stubber.enabled = True
            if reset:
                self.reset()
            models.responses_mock.start()
            for pattern in QuickMockAWS.patterns:
                if pattern.call_count:
                    pattern.calls.reset()
                models.responses_mock.add(pattern)

    return QuickMockAWS


class S3Provider(Provider):
    name = "s3"
    handle_type = S3Handle
    requires = ("moto", "boto3")
    preload = ("moto.core.models", "requests")
    extra = "s3"
    settings = (Setting("s3_region", "AWS region of the s3 fake (default us-east-1).",
                        default="us-east-1"),)
    options: ClassVar[Mapping[str, Option]] = {
        "region": Option("us-east-1", "AWS region for the handle's session and clients.",
                         type=str, setting="s3_region"),
    }

    def start(self, ctx: StartContext) -> None:
        self._mock_class = _mock_class()
        self._clients: dict[str, _Clients] = {}
        self._server: Any = None
        self._lock = threading.Lock()
        self._no_config = str(Path(ctx.workdir) / "no-aws-config")

    def acquire(self, item: pytest.Item, options: Mapping[str, Any]) -> S3Handle:
        region = options["region"]
        env = pytest.MonkeyPatch()
        self._hide_credentials(env, region)
        mock = self._mock_class()
        try:
            mock.start()
        except BaseException:
            env.undo()
            raise
        handle = S3Handle(self, region)
        handle._undo = (mock, env)
        return handle

    def release(self, handle: S3Handle) -> None:
        mock, env = handle._undo
        try:
            mock.stop()
        finally:
            env.undo()

    def clients(self, region: str) -> _Clients:
        if region not in self._clients:
            self._clients[region] = _Clients(region)
        return self._clients[region]

    def server_url(self) -> str:
        with self._lock:
            if self._server is None:
                from moto.server import ThreadedMotoServer

                server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
                server.start()
                self._server = server
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def _hide_credentials(self, env: pytest.MonkeyPatch, region: str) -> None:
        for var in _CREDENTIAL_VARS:
            env.delenv(var, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
        env.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", self._no_config)
        env.setenv("AWS_CONFIG_FILE", self._no_config)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        env.setenv("AWS_DEFAULT_REGION", region)
        env.setenv("AWS_REGION", region)
