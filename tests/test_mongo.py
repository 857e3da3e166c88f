"""mongo: what can run here (selection, options, naming, errors, container handling with a
stand-in image) runs for real; what needs a MongoDB server runs where one is reachable
(DEPFAKES_MONGO_URL, a Docker image named by DEPFAKES_MONGO_IMAGE, or mongod on PATH) and
is skipped here with the reason. No MongoDB server or image can be had on this machine."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from depfakes.providers.mongo import database_name, url_with_database

pytestmark = pytest.mark.serial

USES_MONGO = """
    import pytest

    @pytest.mark.deps("mongo")
    def test_it(deps):
        pass
"""


def _docker_image(image: str | None) -> bool:
    return bool(image) and shutil.which("docker") is not None and subprocess.run(
        ["docker", "image", "inspect", str(image)], capture_output=True).returncode == 0


def _secantus() -> str | None:
    beside = Path(sys.executable).parent / "secantusd-py"
    return str(beside) if beside.is_file() else shutil.which("secantusd-py")


@pytest.fixture(scope="session")
def secantus_url():
    """A MongoDB-wire server started by hand, as a team's shared server would be."""
    binary = _secantus()
    if binary is None:
        pytest.skip("needs secantusd-py (pip install secantusdb)")
    from depfakes.backends.local import free_port
    from depfakes.providers.mongo import _ping

    workdir = Path(tempfile.mkdtemp(prefix="depfakes-test-secantus-"))
    (workdir / "empty.toml").write_text("")
    port = free_port()
    proc = subprocess.Popen([binary, "--config", str(workdir / "empty.toml"), "--host",
                             "127.0.0.1", "--port", str(port), "--storage-path",
                             str(workdir / "data")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    url = f"mongodb://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            _ping(url, timeout_ms=200)
            break
        except Exception:
            assert proc.poll() is None, "secantus exited"
            assert time.monotonic() < deadline, "secantus did not start"
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=["url", "secantus", "docker", "local"])
def real_mongo(request, monkeypatch):
    """pytest args selecting a backend with a real MongoDB(-wire) server; a backend this
    machine lacks is skipped with the reason (docker and local need the official image or
    mongod, which the GitHub workflow has and this machine cannot)."""
    monkeypatch.delenv("DEPFAKES_MONGO_URL", raising=False)
    backend = request.param
    if backend == "url":
        url = os.environ.get("DEPFAKES_TEST_MONGO_URL") or request.getfixturevalue("secantus_url")
        monkeypatch.setenv("DEPFAKES_MONGO_URL", url)
    elif backend == "secantus" and _secantus() is None:
        _skip_or_fail("secantusd-py (pip install secantusdb)")
    elif backend == "docker" and not _docker_image(os.environ.get("DEPFAKES_MONGO_IMAGE")):
        _skip_or_fail("DEPFAKES_MONGO_IMAGE with Docker", required=False)
    elif backend == "local" and not shutil.which("mongod"):
        _skip_or_fail("mongod on PATH", required=False)
    return ["--deps-backend", f"mongo={backend}"]


def _skip_or_fail(what: str, required: bool = True) -> None:
    if os.environ.get("DEPFAKES_REQUIRE_MONGO") or (required and os.environ.get("CI")):
        pytest.fail(f"CI must provide {what}")
    pytest.skip(f"needs {what}")


def test_database_names_are_unique_and_within_limits():
    names = {database_name("0123456789abcdef", n) for n in range(1, 1001)}
    assert len(names) == 1000
    assert all(len(name.encode()) <= 63 and name.startswith("dft_") for name in names)
    assert database_name("abc", 7) == "dft_abc_7"
    with pytest.raises(ValueError, match="cannot make a MongoDB database name"):
        database_name("bad/name", 1)


def test_url_carries_the_test_database_and_keeps_credentials():
    url = url_with_database("mongodb://app:s3cret@db.example:27018/admin?authSource=admin",
                            "dft_x_1")
    assert url == "mongodb://app:s3cret@db.example:27018/dft_x_1?authSource=admin"
    assert url_with_database("mongodb://127.0.0.1:27017/", "d") == "mongodb://127.0.0.1:27017/d"


def test_options_and_pins_are_validated(project, pytester):
    project(
        """
        import pytest

        @pytest.mark.deps("mongo", isolation="transaction")
        def test_a():
            pass

        @pytest.mark.deps("mongo:seven")
        def test_b():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*test_a: option isolation= belongs to 'postgres', which this test does not declare*",
        "*test_b: 'mongo:seven': a MongoDB version is like 7.0 or 8",
    ])


def test_no_backend_skips_with_every_reason_or_fails_under_strict(project, pytester,
                                                                   monkeypatch):
    monkeypatch.delenv("DEPFAKES_MONGO_URL", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no mongod there
    project(USES_MONGO)
    result = pytester.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([
        "SKIPPED*depfakes: mongo is not available here: no backend can serve it (url: set "
        "DEPFAKES_MONGO_URL to use an existing server; docker: the Docker engine at "
        "unix:///nonexistent/docker.sock is not reachable (*); start Docker or set "
        "DOCKER_HOST; local: no mongod on PATH; install "
        "the MongoDB server or use Docker or DEPFAKES_MONGO_URL)"
    ])
    result = pytester.runpytest_subprocess("--deps-strict")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*failing, not skipping, because --deps-strict is on*"])
    # A dependency this machine is known not to have can be declared optional: it skips.
    monkeypatch.setenv("DEPFAKES_OPTIONAL", "mongo;postgres")
    result = pytester.runpytest_subprocess("--deps-strict")
    result.assert_outcomes(skipped=1)
    monkeypatch.setenv("DEPFAKES_OPTIONAL", "mongoo")
    result = pytester.runpytest_subprocess("--deps-strict")
    result.stderr.fnmatch_lines(["*depfakes_optional names mongoo: known dependencies are*"])


def test_docker_image_missing(project, pytester, monkeypatch):
    if not _docker_image(os.environ.get("DEPFAKES_REDIS_IMAGE", "local/redis:7")):
        pytest.skip("needs a Docker engine")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("DEPFAKES_MONGO_IMAGE", "local/no-such-mongo:7.0")
    project(USES_MONGO.replace('"mongo"', '"mongo:6.0"'))
    result = pytester.runpytest_subprocess("--deps-backend", "mongo=docker")
    result.assert_outcomes(errors=1)
    # The pin replaced the tag of the configured image.
    result.stdout.fnmatch_lines(["*image local/no-such-mongo:6.0 is not present locally and "
                                 "could not be pulled*"])


def _depfakes_containers() -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", "label=io.depfakes.pid",
                          "--format", "{{.ID}} {{.Image}} {{.Status}}"],
                         capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_docker_stand_in_that_never_answers_times_out_with_its_log(project, pytester,
                                                                    monkeypatch):
    """A container that runs but does not speak MongoDB on 27017 (the local Redis image):
    start, readiness polling, timeout with the server's log, and removal."""
    stand_in = os.environ.get("DEPFAKES_REDIS_IMAGE", "local/redis:7")
    if not _docker_image(stand_in):
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide Docker with {stand_in}")
        pytest.skip(f"needs a Docker engine with {stand_in}")
    monkeypatch.setenv("DEPFAKES_MONGO_IMAGE", stand_in)
    monkeypatch.setenv("DEPFAKES_START_TIMEOUT", "2")
    project(USES_MONGO)
    result = pytester.runpytest_subprocess("--deps-backend", "mongo=docker")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{stand_in} was not ready within 2 s. Last log lines:*",
                                 "*Ready to accept connections*"])
    assert _depfakes_containers() == []


@pytest.fixture
def fake_mongod(monkeypatch):
    """A `mongod` on PATH that reports a version and then fails to start, as a broken or
    too-old installation would. The directory is world-readable: under root the server
    runs as an unprivileged user."""
    directory = Path(tempfile.mkdtemp(prefix="depfakes-fake-mongod-"))
    directory.chmod(0o755)

    def install(version: str) -> Path:
        script = directory / "mongod"
        script.write_text(
            "#!/bin/sh\n"
            f'if [ "$1" = --version ]; then echo "db version v{version}"; exit 0; fi\n'
            'echo "fake mongod: Failed to set up listener: SocketException" >&2\n'
            "exit 48\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        monkeypatch.setenv("PATH", f"{directory}:{os.environ['PATH']}")
        return script

    yield install
    shutil.rmtree(directory, ignore_errors=True)


def test_local_mongod_too_old_for_the_pin(project, pytester, monkeypatch, fake_mongod):
    monkeypatch.delenv("CI", raising=False)
    script = fake_mongod("4.4.29")
    project(USES_MONGO.replace('"mongo"', '"mongo:7.0"'))
    result = pytester.runpytest_subprocess("--deps-backend", "mongo=local")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*mongo=local was asked for but cannot serve here: mongo:7.0 was pinned but {script} (version 4.4.29) "
                                 "is MongoDB 4.4.29; it is too old for the pin; change the pin "
                                 "or the server*"])


def test_local_mongod_that_exits_shows_its_log(project, pytester, fake_mongod):
    fake_mongod("7.0.14")
    project(USES_MONGO)
    result = pytester.runpytest_subprocess("--deps-backend", "mongo=local")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*exited with code 48 before it was ready. Last log lines:*",
                                 "*fake mongod: Failed to set up listener*"])


REAL_SUITE = '''
import asyncio, os, re
import pytest
from pymongo import MongoClient

CHATS = [
    {"user_id": "u1", "title": "trip", "queries": [{"content": "Book a flight to Lisbon"},
                                                   {"content": "hotel near the sea"},
                                                   {"content": None}]},
    {"user_id": "u1", "title": "work", "queries": [{"content": "quarterly report"}]},
    {"user_id": "u2", "title": "trip", "queries": [{"content": "flight to Oslo"}]},
]


@pytest.mark.deps("mongo")
@pytest.mark.parametrize("n", range(3))
def test_isolated_database_seeded_from_the_template(deps, n):
    assert deps.mongo.db.name == deps.mongo.dbname
    assert deps.mongo.db.settings.find_one({}, {"_id": 0}) == {"theme": "dark"}
    assert "user_1" in deps.mongo.db.chats.index_information()  # template index copied
    assert deps.mongo.db.chats.count_documents({}) == 0
    deps.mongo.db.chats.insert_many(CHATS)
    assert deps.mongo.db.chats.count_documents({}) == 3


@pytest.mark.deps("mongo")
def test_own_client_from_url_sees_only_the_test_database(deps):
    deps.mongo.db.things.insert_one({"x": 1})
    client = MongoClient(deps.mongo.url)
    assert client.get_default_database().name == deps.mongo.dbname
    assert client.get_default_database().things.count_documents({}) == 1
    client.close()


@pytest.mark.deps("mongo")
def test_async_client(deps):
    async def go():
        db = deps.mongo.async_client.get_default_database()
        await db.things.insert_one({"async": True})
        count = await db.things.count_documents({})
        await deps.mongo.async_client.close()
        return count
    assert asyncio.run(go()) == 1


@pytest.mark.deps("mongo")
def test_regex_match_inside_filter_needs_a_real_engine(deps):
    """The seeds' aggregation: $filter with $regexMatch inside $project (mongomock lies)."""
    deps.mongo.db.chats.insert_many(CHATS)
    pipeline = [
        {"$match": {"user_id": "u1"}},
        {"$project": {"_id": 0, "title": 1, "matching_messages": {"$filter": {
            "input": "$queries", "as": "msg", "cond": {"$regexMatch": {
                "input": {"$ifNull": ["$$msg.content", ""]}, "regex": "flight",
                "options": "i"}}}}}},
        {"$match": {"matching_messages.0": {"$exists": True}}},
    ]
    assert list(deps.mongo.db.chats.aggregate(pipeline)) == [
        {"title": "trip", "matching_messages": [{"content": "Book a flight to Lisbon"}]}]
'''

REAL_CONFTEST = '''
def pytest_depfakes_mongo_init(db):
    db.settings.insert_one({"theme": "dark"})
    db.chats.create_index("user_id", name="user_1")
'''


def test_real_mongo_suite(real_mongo, project, pytester):
    project(REAL_SUITE, conftest=REAL_CONFTEST)
    result = pytester.runpytest_subprocess(*real_mongo, "-p", "no:randomly")
    result.assert_outcomes(passed=6)
    url = os.environ.get("DEPFAKES_MONGO_URL")
    if url:  # everything depfakes created on an existing server is gone
        from pymongo import MongoClient

        client: MongoClient = MongoClient(url)
        assert [n for n in client.list_database_names() if n.startswith("dft_")] == []
        client.close()


RANDOM_SUITE = '''
import random
import pytest

@pytest.mark.deps("mongo")
@pytest.mark.parametrize("seed", range(200))
def test_random_writes_never_leak(deps, seed):
    rng = random.Random(seed)
    db = deps.mongo.db
    # Exactly the template: its collection and seed, nothing an earlier test wrote.
    assert sorted(db.list_collection_names()) == ["seed"], db.list_collection_names()
    assert db.seed.count_documents({}) == 1
    own = deps.mongo.client  # and through a client of the test's own, from the URL
    from pymongo import MongoClient
    client = MongoClient(deps.mongo.url)
    mine = client.get_default_database()
    for _ in range(rng.randint(1, 4)):
        name = f"c{rng.randint(0, 6)}"
        mine[name].insert_many([{"n": rng.randint(0, 9), "seed": seed}
                                for _ in range(rng.randint(1, 5))])
        if rng.random() < 0.5:
            mine[name].create_index("n", unique=False)
    if rng.random() < 0.3:
        mine.seed.insert_one({"leak": seed})
    client.close()
    assert own is deps.mongo.client
'''


def test_randomized_isolation_suite(real_mongo, project, pytester):
    """200 tests writing random collections, indexes and documents through their own
    clients: each starts from the template, whatever ran before, serially and under -n 2
    with one server shared by the workers."""
    project(RANDOM_SUITE, conftest="""
        def pytest_depfakes_mongo_init(db):
            db.seed.insert_one({"theme": "dark"})
    """)
    pytester.runpytest_subprocess(*real_mongo, "-p", "no:randomly").assert_outcomes(passed=200)
    pytester.runpytest_subprocess(*real_mongo, "-n", "2").assert_outcomes(passed=200)
    url = os.environ.get("DEPFAKES_MONGO_URL")
    if url:  # database count flat: nothing of the 400 tests is left on the server
        from pymongo import MongoClient

        client: MongoClient = MongoClient(url)
        assert [n for n in client.list_database_names() if n.startswith("dft_")] == []
        client.close()


def test_mongo_env_reuse_and_pins_on_secantus(project, pytester, tmp_path):
    if _secantus() is None:
        _skip_or_fail("secantusd-py (pip install secantusdb)")
    seen = tmp_path / "seen"
    project(f"""
        import os
        import pytest
        from pymongo import MongoClient

        @pytest.mark.deps("mongo")
        def test_env(deps):
            assert os.environ["MONGO_URL"] == deps.mongo.url
            MongoClient(os.environ["MONGO_URL"]).get_default_database().x.insert_one({{}})
            with open({str(seen)!r}, "a") as fh:
                fh.write(deps.mongo.client.admin.command("serverStatus").get("pid", "")
                         .__str__() + str(deps.mongo.client.address) + "\\n")
    """, ini="depfakes_env = MONGO_URL = mongo.url")
    args = ("--deps-backend", "mongo=secantus", "--deps-reuse")
    try:
        for _ in range(2):
            pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)
        assert len(set(seen.read_text().splitlines())) == 1  # the kept server, adopted
    finally:
        subprocess.run([sys.executable, "-m", "depfakes.cli", "down", "--project"],
                       cwd=pytester.path, capture_output=True, timeout=60)
    (pytester.path / "test_project.py").write_text(USES_MONGO.replace(
        '"mongo"', '"mongo:7.0"').replace("\n    ", "\n"))
    pinned = pytester.runpytest_subprocess("--deps-backend", "mongo=secantus")
    pinned.assert_outcomes(errors=1)
    pinned.stdout.fnmatch_lines(["*mongo:7.0 was pinned but * is MongoDB 8.*; change the pin "
                                 "or the server*"])


def test_unreachable_url_masks_the_password(project, pytester, monkeypatch):
    from depfakes.backends.local import free_port

    monkeypatch.setenv("DEPFAKES_MONGO_URL",
                       f"mongodb://app:hunter2-secret@127.0.0.1:{free_port()}/?authSource=admin")
    project(USES_MONGO)
    result = pytester.runpytest_subprocess("--deps-backend", "mongo=url")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*DEPFAKES_MONGO_URL (url mongodb://app:***@127.0.0.1:*) "
                                 "does not answer*"])
    assert "hunter2-secret" not in result.stdout.str() + result.stderr.str()


def test_doctor_reports_a_mongod_that_cannot_say_its_version(pytester, monkeypatch):
    directory = Path(tempfile.mkdtemp(prefix="depfakes-odd-mongod-"))
    script = directory / "mongod"
    script.write_text("#!/bin/sh\necho 'hello'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}:{os.environ['PATH']}")
    pytester.makepyfile(test_nothing="def test_it(): pass")
    try:
        result = subprocess.run([sys.executable, "-m", "depfakes.cli", "doctor"],
                                cwd=pytester.path, capture_output=True, text=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert result.returncode == 0, result.stdout + result.stderr  # mongo is not declared
    assert f"    local       no   {script} --version did not say its version" in result.stdout
