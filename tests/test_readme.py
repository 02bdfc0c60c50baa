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


def test_readme_docker_section_says_what_the_dockerfile_does():
    import json

    from router.settings import ENV_PREFIX, Settings

    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    cmd = next(json.loads(line[len("CMD "):]) for line in dockerfile.splitlines()
               if line.startswith("CMD "))
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    docker = readme[readme.index("The `Dockerfile` builds"):readme.index("deploy/k8s/router.yaml")]
    assert f"default command `{' '.join(cmd)}`" in docker
    for env in ("ROUTER_HOST=0.0.0.0", "ROUTER_PORT=8000"):
        assert env in dockerfile and f"`{env}`" in docker
    # Listening on every interface: the section warns to set client keys, by their real name.
    keys = f"{ENV_PREFIX}API_KEYS"
    assert "api_keys" in Settings.model_fields
    assert f"-e {keys}=" in docker and keys in dockerfile


def test_readme_says_where_the_tests_data_is_and_what_happens_without_it():
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    tests = readme[readme.index("Tests — install"):readme.index("## Contents")]
    assert "`../shared/data`, beside the checkout" in tests
    assert "skipped with one line saying what is missing" in tests
