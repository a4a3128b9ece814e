"""`python -m integration marvin`: CloudStack's own Marvin tests for the StorPool plugin against
the local stack.

The tests, Marvin and their runner are not part of this repository: they sit beside it, in
`../shared/marvin/` (CloudStack's `test/integration/plugins/storpool` and `tools/marvin`, as
shipped, and `run.sh`, which builds Marvin's virtualenv, starts the stack with `python -m
integration up`, writes Marvin's configuration and runs each file under nose). This command runs
that script from the project root and prints its totals; the project's only part is the
configuration writer (`integration/marvin_config.py`), which names the stack's seeded objects.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click

PROJECT = Path(__file__).resolve().parents[1]
RUNNER = PROJECT.parent / "shared" / "marvin" / "run.sh"
CONFIG_WRITER = Path(__file__).with_name("marvin_config.py")
TEST_FILES = ("TestStorPoolVolumes", "TestTagsOnStorPool", "TestVmSnapshots", "test_storpool_tiers",
              "MigrateVolumeToStorPool", "TestEncryptedVolumes", "test_snapshot_copy_on_primary_storage")


DOC = PROJECT / "docs" / "marvin.md"
"""Lists, per test file, the tests that pass: a `### <file>` section's `Passing (n): ...` paragraph."""


def listed_passing(doc: str) -> dict[str, set[str]]:
    """Per test file, the tests `docs/marvin.md` lists as passing ("Passing: none." is none)."""
    listed: dict[str, set[str]] = {}
    for section in re.split(r"^### ", doc, flags=re.M)[1:]:
        name = section.split(maxsplit=1)[0]
        para = re.search(r"^Passing\b[^:]*:(.*?)(?:\n\s*\n|\Z)", section, flags=re.M | re.S)
        names = para.group(1) if para and not para.group(1).strip().startswith("none") else ""
        listed[name] = set(re.findall(r"`(test_\w+)`", names))
    return listed


def passed_tests(output: str) -> dict[str, set[str]]:
    """Per test file, the tests the summary's PASSED line names (`file.Class.test`)."""
    passed: dict[str, set[str]] = {}
    for line in output.splitlines():
        if m := re.match(r"PASSED \d+: (.*)$", line):
            for full in filter(None, (t.strip() for t in m.group(1).split(","))):
                parts = full.split(".")
                passed.setdefault(parts[0], set()).add(parts[-1])
    return passed


def regressions(doc: str, output: str, files: tuple[str, ...]) -> list[str]:
    """The tests listed as passing, in the files that ran, that did not pass this time."""
    listed, passed = listed_passing(doc), passed_tests(output)
    return sorted(f"{f}.{t}" for f in files for t in listed.get(f, set()) - passed.get(f, set()))


def totals(output: str) -> list[str]:
    """The summary's PASSED, NO RESULT and TOTAL lines (summarize.py's format)."""
    return [line for line in output.splitlines() if re.match(r"(PASSED \d+|NO RESULT |TOTAL )", line)]


@click.command("marvin")
@click.argument("files", nargs=-1, type=click.Choice(TEST_FILES))
@click.option("--exclude", "exclude", default=None, help="Regex of test names to leave out (nose -e).")
@click.option("--keep-stack", is_flag=True, help="Leave the stack up afterwards.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Empty or new directory for the config, logs and xunit files (default: a new temp dir).")
@click.option("--runner", type=click.Path(dir_okay=False, path_type=Path), default=RUNNER, show_default=True,
              help="The Marvin runner script.")
@click.option("--expect", is_flag=True,
              help="Fail when a test docs/marvin.md lists as passing (in the files run) did not pass.")
def marvin_cmd(files: tuple[str, ...], exclude: str | None, keep_stack: bool, out: Path | None,
               runner: Path, expect: bool) -> None:
    """Run CloudStack's Marvin tests for the StorPool plugin (all seven files unless FILES)."""
    if not runner.is_file():
        raise click.ClickException(f"the Marvin runner is not at {runner}: it lives beside the project, in "
                                   "../shared/marvin/")
    env = dict(os.environ, MARVIN_MAKE_CONFIG=str(CONFIG_WRITER))
    if exclude:
        env["EXCLUDE"] = exclude
    if keep_stack:
        env["KEEP_STACK"] = "1"
    if out is not None:
        env["MARVIN_OUT"] = str(out)
    proc = subprocess.Popen(["bash", str(runner), *files], cwd=PROJECT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    code = proc.wait()
    found = totals("".join(lines))
    if found:
        click.echo("\n" + "\n".join(found))
    if code != 0:
        raise click.ClickException(f"the Marvin runner could not run the tests (exit {code})")
    if expect:
        lost = regressions(DOC.read_text(), "".join(lines), files or TEST_FILES)
        if lost:
            raise click.ClickException(f"{len(lost)} test(s) listed as passing in docs/marvin.md did not pass: "
                                       + ", ".join(lost))
        click.echo("every test docs/marvin.md lists as passing in these files passed")
