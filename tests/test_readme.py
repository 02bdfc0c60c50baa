"""The README's promises: its test command is what CI runs."""

import re

from tests.conftest import REPO_ROOT


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    test_command = bash_blocks(readme)[1].strip()
    ci_lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_readme_main_command_installs_and_runs_the_quickstart():
    readme = (REPO_ROOT / "README.md").read_text()
    assert bash_blocks(readme)[0].strip() == "python -m pip install -e . && router quickstart"
