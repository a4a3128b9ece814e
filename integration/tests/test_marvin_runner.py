"""`python -m integration marvin`: the runner is called from the project root with the project's
config writer and the files asked for, and its totals are repeated; the config writer names the
stack's seeded objects (a stand-in runner script here: the real one builds Marvin and runs for
an hour)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from integration.marvin import CONFIG_WRITER, PROJECT, marvin_cmd, totals

SUMMARY = """TestVmSnapshots.xml    tests=3 errors=0 failures=1 skip=0
   FAILURE test_03_delete_vm_snapshots: AssertionError
PASSED 2: TestVmSnapshots.TestVmSnapshot.test_01, TestVmSnapshots.TestVmSnapshot.test_02
NO RESULT TestStorPoolVolumes: the file was killed before nose wrote its results
TOTAL {'tests': 3, 'errors': 0, 'failures': 1, 'skip': 0}
"""


def test_totals_are_the_summary_lines() -> None:
    assert totals("noise\n" + SUMMARY + "results: /tmp/x\n") == [
        "PASSED 2: TestVmSnapshots.TestVmSnapshot.test_01, TestVmSnapshots.TestVmSnapshot.test_02",
        "NO RESULT TestStorPoolVolumes: the file was killed before nose wrote its results",
        "TOTAL {'tests': 3, 'errors': 0, 'failures': 1, 'skip': 0}",
    ]


def test_runs_the_runner_from_the_project_root_with_the_projects_config_writer(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    runner = tmp_path / "run.sh"
    runner.write_text(
        f"#!/usr/bin/env bash\npython3 -c 'import json,os,sys; json.dump({{\"cwd\": os.getcwd(), \"args\": sys.argv[1:], "
        f"\"config\": os.environ.get(\"MARVIN_MAKE_CONFIG\"), \"exclude\": os.environ.get(\"EXCLUDE\")}}, "
        f"open(\"{seen}\", \"w\"))' \"$@\"\ncat <<'EOF'\n{SUMMARY}EOF\n")
    result = CliRunner().invoke(marvin_cmd, ["--runner", str(runner), "--exclude", "test_01", "TestVmSnapshots"])
    assert result.exit_code == 0, result.output
    assert json.loads(seen.read_text()) == {"cwd": str(PROJECT), "args": ["TestVmSnapshots"],
                                            "config": str(CONFIG_WRITER), "exclude": "test_01"}
    assert result.output.rstrip().endswith("TOTAL {'tests': 3, 'errors': 0, 'failures': 1, 'skip': 0}")


def test_a_runner_that_cannot_run_the_tests_fails_the_command(tmp_path: Path) -> None:
    runner = tmp_path / "run.sh"
    runner.write_text("#!/usr/bin/env bash\necho 'run from the project root'\nexit 2\n")
    result = CliRunner().invoke(marvin_cmd, ["--runner", str(runner)])
    assert result.exit_code != 0 and "could not run the tests (exit 2)" in result.output
    missing = CliRunner().invoke(marvin_cmd, ["--runner", str(tmp_path / "absent.sh")])
    assert missing.exit_code != 0 and "../shared/marvin/" in missing.output


def test_the_config_names_the_stacks_seeded_objects(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "stack").mkdir(parents=True)
    (run_dir / "secrets.env").write_text(
        "CLOUDSTACK_ENDPOINT='http://127.0.0.1:8096/client/api'\nCLOUDSTACK_KEY=key\nCLOUDSTACK_SECRET=secret\n"
        "SP_API_HTTP_HOST=127.0.0.1\nSP_API_HTTP_PORT=81\nSP_AUTH_TOKEN=token\n")
    (run_dir / "stack" / "pools.toml").write_text(
        '[[pool]]\nuuid = "u1"\nname = "storpool-primary"\nzone = "z"\nurl = "storpool://t@h:81/ssd"\n\n'
        '[[pool]]\nuuid = "u2"\nname = "storpool-hybrid"\nzone = "z"\nurl = "storpool://t@h:81/hybrid"\n')
    out = tmp_path / "marvin.cfg"
    # Standalone, as the runner calls it: the system's python, nothing from the project imported.
    subprocess.run([sys.executable, str(CONFIG_WRITER), str(run_dir), str(out), str(tmp_path / "logs")], check=True)
    cfg = json.loads(out.read_text())
    zone = cfg["zones"][0]
    assert zone["name"] == "zone1" and [p["name"] for p in zone["primaryStorages"]] == [
        "storpool-primary", "storpool-hybrid"]
    assert all(p["provider"] == "StorPool" for p in zone["primaryStorages"])
    assert (zone["spEndpoint"], zone["spEndpointPort"], zone["spAuthToken"]) == ("127.0.0.1", 81, "token")
    server = cfg["mgtSvr"][0]
    assert (server["mgtSvrIp"], server["port"], server["apiKey"], server["securityKey"]) == (
        "127.0.0.1", 8096, "key", "secret")
    assert out.stat().st_mode & 0o777 == 0o600


DOC = """# x

### TestA (3 tests)

Passing (2): `test_01_a`,
`test_02_b`.

Not passing: `test_03_c`.

### TestB (2 tests)

Passing: none. Guest over SSH: `test_01_x`.
"""


def test_the_passing_lists_are_read_per_file() -> None:
    from integration.marvin import listed_passing

    assert listed_passing(DOC) == {"TestA": {"test_01_a", "test_02_b"}, "TestB": set()}


def test_a_listed_test_that_did_not_pass_is_a_regression() -> None:
    from integration.marvin import regressions

    out = "PASSED 2: TestA.TestCls.test_01_a, TestB.TestCls.test_01_x\nTOTAL {}"
    assert regressions(DOC, out, ("TestA", "TestB")) == ["TestA.test_02_b"]
    assert regressions(DOC, out, ("TestB",)) == []
    assert regressions(DOC, "PASSED 0: \nTOTAL {}", ("TestA",)) == ["TestA.test_01_a", "TestA.test_02_b"]


def test_the_project_doc_lists_something_for_every_file() -> None:
    from integration.marvin import DOC as PROJECT_DOC
    from integration.marvin import TEST_FILES, listed_passing

    listed = listed_passing(PROJECT_DOC.read_text())
    assert set(TEST_FILES) <= set(listed)
