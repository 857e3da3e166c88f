"""The deps marker: union across levels, closest pin/option wins, collection-time errors."""

from __future__ import annotations

import pytest


def test_markers_merge_closest_pin_and_option_win(project, pytester):
    project(
        """
        import pytest
        pytestmark = pytest.mark.deps("redis:6", "s3", region="eu-west-1")

        @pytest.mark.deps("http")
        class TestThing:
            @pytest.mark.deps("redis:7.2", region="ap-south-1")
            def test_it(self, deps):
                assert {"http", "redis", "s3"} <= set(dir(deps))
                assert deps.redis.server.version == (7, 2)
                assert deps.s3.region == "ap-south-1"

            def test_bare_name_keeps_farther_pin(self, deps):
                assert deps.redis.server.version == (6,)
                assert deps.s3.region == "eu-west-1"
        """
    )
    result = pytester.runpytest("-q")
    result.assert_outcomes(passed=2)


def test_two_pins_on_the_same_level_are_an_error(project, pytester):
    project(
        """
        import pytest

        @pytest.mark.deps("redis:6")
        @pytest.mark.deps("redis:7")
        def test_it(deps):
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_it: 'redis' is pinned to both*keep one pin*"])


def test_unknown_dependency_suggests_the_closest(project, pytester):
    project(
        """
        import pytest

        @pytest.mark.deps("redsi")
        def test_it():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: depfakes: test_project.py::test_it: unknown dependency 'redsi' "
        "(did you mean 'redis'?). Known dependencies: http, mongo, postgres, redis, s3"
    ])
    # A message, not a traceback from depfakes internals; the test never ran.
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    result.stdout.no_fnmatch_line("*passed*")


def test_unknown_option_lists_the_valid_ones(project, pytester):
    project(
        """
        import pytest

        @pytest.mark.deps("s3", regoin="eu-west-1")
        def test_it():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*test_it: unknown option regoin= (did you mean 'region'?). "
        "Valid options for s3: env, region"
    ])
    assert "Traceback" not in result.stderr.str()


def test_option_of_an_undeclared_dependency_says_what_to_add(project, pytester):
    project(
        """
        import pytest

        @pytest.mark.deps("redis", region="eu-west-1")
        def test_it():
            pass
        """
    )
    result = pytester.runpytest()
    result.stderr.fnmatch_lines([
        "*option region= belongs to 's3', which this test does not declare; "
        "add \"s3\" to the deps marker"
    ])


def test_option_value_of_the_wrong_type(project, pytester):
    project(
        """
        import pytest

        @pytest.mark.deps("redis", decode_responses="yes")
        def test_it():
            pass
        """
    )
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*redis: option decode_responses='yes' must be bool, not str"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ('"s3:2"', "*'s3' does not take a version (got 's3:2')"),
        ('"redis:banana"', "*'redis:banana': a Redis version is numbers like 7 or 7.2"),
        ("42", "*deps() takes dependency names as strings*got 42"),
    ],
)
def test_bad_names_and_versions(project, pytester, args, message):
    project(
        f"""
        import pytest

        @pytest.mark.deps({args})
        def test_it():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_every_bad_marker_is_reported_at_once(project, pytester):
    project(
        """
        import pytest

        @pytest.mark.deps("nope")
        def test_a():
            pass

        @pytest.mark.deps("redis", colour=1)
        def test_b():
            pass
        """
    )
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*test_a: unknown dependency 'nope'*", "*test_b: unknown option*"])


def test_strict_markers_and_plain_dependency_markers(project, pytester):
    project(
        """
        import pytest

        @pytest.mark.deps("s3")
        def test_s3(deps):
            pass

        def test_by_fixture(redis):
            pass

        def test_plain():
            pass
        """
    )
    result = pytester.runpytest("--strict-markers", "-m", "not s3", "-v")
    result.assert_outcomes(passed=2, deselected=1)
    result = pytester.runpytest("--strict-markers", "-m", "redis", "-v")
    result.assert_outcomes(passed=1, deselected=2)
    result.stdout.fnmatch_lines(["*test_by_fixture PASSED*"])


def test_requesting_a_fixture_declares_the_dependency(project, pytester):
    project(
        """
        def test_it(redis, deps):
            assert deps.redis is redis
            redis.client.set("k", "v")
            assert redis.client.get("k") == b"v"
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_a_projects_own_fixture_of_the_same_name_declares_nothing(project, pytester):
    project(
        """
        def test_it(redis, deps):
            assert redis == "mine"
            assert "redis" not in deps
        """,
        conftest="""
        import pytest

        @pytest.fixture
        def redis():
            return "mine"
        """,
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_reading_an_undeclared_dependency_shows_the_marker(project, pytester):
    project(
        """
        import pytest

        @pytest.mark.deps("redis")
        def test_it(deps):
            deps.s3
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*UndeclaredDependency: deps.s3: this test does not declare 's3' (it declares redis). "
        "Add @pytest.mark.deps(\"s3\") to the test, or request the 's3' fixture."
    ])
