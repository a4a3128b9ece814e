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
def marvin_cmd(files: tuple[str, ...], exclude: str | None, keep_stack: bool, out: Path | None,
               runner: Path) -> None:
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
