"""Settings: marker > CLI > env > ini > default, --help, bad values, env injection."""

from __future__ import annotations

import pytest

REGION_TEST = """
    import os
    import pytest

    @pytest.mark.deps("s3")
    def test_region(deps):
        assert deps.s3.region == os.environ["EXPECTED"]

    @pytest.mark.deps("s3", region="us-west-2")
    def test_marker_wins(deps):
        assert deps.s3.region == "us-west-2"
"""


@pytest.mark.parametrize(
    ("cli", "env", "ini", "expected"),
    [
        (None, None, None, "us-east-1"),
        (None, None, "eu-west-1", "eu-west-1"),
        (None, "eu-central-1", "eu-west-1", "eu-central-1"),
        ("ap-south-1", "eu-central-1", "eu-west-1", "ap-south-1"),
    ],
)
def test_precedence(project, pytester, monkeypatch, cli, env, ini, expected):
    project(REGION_TEST, ini=f"depfakes_s3_region = {ini}" if ini else None)
    monkeypatch.setenv("EXPECTED", expected)
    if env:
        monkeypatch.setenv("DEPFAKES_S3_REGION", env)
    args = [f"--deps-s3-region={cli}"] if cli else []
    pytester.runpytest(*args).assert_outcomes(passed=2)


def test_every_setting_is_in_help_under_a_depfakes_group(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines([
        "depfakes: dependencies for tests:",
        "*--deps-strict*",
        "*--deps-backend=NAME=VALUE*",
        "*--deps-s3-region=*",
    ])
    result.stdout.fnmatch_lines(["*depfakes_strict (string):*", "*depfakes_env (linelist):*"])


def test_a_bad_setting_value_is_one_clear_usage_error(project, pytester, monkeypatch):
    project("def test_it(): pass")
    monkeypatch.setenv("DEPFAKES_STRICT", "maybe")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: depfakes: DEPFAKES_STRICT: expected true/false (1/0, yes/no, on/off), got 'maybe'"
    ])


def test_strict_defaults_to_on_under_ci(project, pytester, monkeypatch):
    project(
        """
        def test_it(request):
            from depfakes.state import session_state
            assert session_state(request.config).runtime.strict is EXPECTED
        """.replace("EXPECTED", "True")
    )
    monkeypatch.setenv("CI", "true")
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.runpytest("--deps-no-strict").assert_outcomes(failed=1)


ENV_TEST = """
    import os
    import pytest
    import redis as redislib

    @pytest.mark.deps("redis", "s3")
    def test_ini_mapping(deps):
        assert os.environ["REDIS_URL"] == deps.redis.url
        assert os.environ["AWS_ENDPOINT_URL"] == deps.s3.endpoint_url
        deps.redis.client.set("seen", "yes")
        # An app reading its settings from the environment needs no change:
        assert redislib.Redis.from_url(os.environ["REDIS_URL"]).get("seen") == b"yes"

    @pytest.mark.deps("redis", env={"CACHE_URL": "redis.url"})
    def test_marker_mapping(deps):
        assert os.environ["CACHE_URL"] == deps.redis.url
        assert "AWS_ENDPOINT_URL" not in os.environ  # s3 not declared: not injected

    def test_restored():
        assert os.environ["REDIS_URL"] == "redis://production:6379"
        assert "CACHE_URL" not in os.environ
"""


def test_env_injection_from_ini_and_marker_is_restored(project, pytester, monkeypatch):
    project(ENV_TEST, ini="depfakes_env =\n    REDIS_URL = redis.url\n"
                          "    AWS_ENDPOINT_URL = s3.endpoint_url\n")
    monkeypatch.setenv("REDIS_URL", "redis://production:6379")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=3)


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ("REDIS_URL redis.url", "*depfakes_env line 'REDIS_URL redis.url': expected "
                                "'VAR = dependency.attribute'"),
        ("REDIS_URL = redsi.url", "*unknown dependency 'redsi'*"),
        ("REDIS_URL = redis.uri", "*RedisHandle has no attribute 'uri' (did you mean 'url'?)*"),
    ],
)
def test_bad_ini_env_lines(project, pytester, ini, message):
    project("def test_it(): pass", ini=f"depfakes_env = {ini}")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_bad_marker_env_mapping(project, pytester):
    project(
        """
        import pytest

        @pytest.mark.deps("redis", env={"S3": "s3.endpoint_url"})
        def test_it():
            pass
        """
    )
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*env S3='s3.endpoint_url': 's3' is not declared by this test; "
                                 "add \"s3\" to the deps marker"])
