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
    assert bash_blocks(readme)[0].strip() == \
        'python -m pip install -e ".[train]" && router quickstart'


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


def guarantees_rows() -> list[list[str]]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Guarantees"):readme.index("## Benchmarks")]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| failure | what a client gets | what the outcome log loses |")
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[1:]]


def test_readme_guarantees_name_the_settings_defaults_the_code_has():
    from router.settings import ENV_PREFIX, Settings

    named = 0
    for row in guarantees_rows():
        for env, value in re.findall(r"`(ROUTER_[A-Z_]+)=([0-9.]+)`", " ".join(row)):
            field = env.removeprefix(ENV_PREFIX).lower()
            assert field in Settings.model_fields, env
            assert float(value) == Settings.model_fields[field].default, env
            named += 1
    assert named >= 9


def test_readme_guarantees_state_the_outcome_logs_own_bounds():
    import inspect

    from router.outcome_log import OutcomeLog

    defaults = {name: p.default for name, p in
                inspect.signature(OutcomeLog.__init__).parameters.items()}
    cells = {row[0]: row[2] for row in guarantees_rows()}
    down = next(loss for failure, loss in cells.items() if "database is down" in failure)
    assert f"({defaults['max_queue']:,} rows" in down
    sigterm = next(loss for failure, loss in cells.items() if failure.startswith("SIGTERM"))
    assert f"waits {defaults['close_unreachable_timeout_s']:g} s" in sigterm


def test_every_failure_in_the_readme_guarantees_names_tests_that_exist():
    rows = guarantees_rows()
    failures = " ".join(row[0] for row in rows)
    for fault in ("401", "403", "404", "429", "5xx", "refuses the connection", "frozen",
                  "dies in a stream", "database is down", "Redis", "SIGTERM", "SIGKILL"):
        assert fault in failures, fault
    for row in rows:
        tests = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", row[3])
        assert tests, row[0]
        for path, name in tests:
            source = (REPO_ROOT / path).read_text()
            assert re.search(rf"^(async )?def {name}\(", source, flags=re.M), f"{path}::{name}"
