import json
from pathlib import Path

import pytest

from router.cli import main
from router.registry import Registry


def test_quickstart_trains_evaluates_routes_and_promotes(tmp_path, capsys):
    registry_root = tmp_path / "models"
    code = main(["quickstart", "--dir", str(tmp_path / "demo"), "--prompts", "300",
                 "--registry", str(registry_root), "--no-serve"])
    assert code == 0
    out = capsys.readouterr().out
    assert "[5/5] promoted" in out
    assert (tmp_path / "demo" / "eval.png").stat().st_size > 10_000
    decisions = [json.loads(block) for block in _json_blocks(out)]
    assert len(decisions) == 2
    assert all(d["model"] in {c["model"] for c in d["candidates"]} for d in decisions)
    registry = Registry(registry_root)
    assert registry.current_version() == decisions[0]["model_version"]


def _json_blocks(text: str) -> list[str]:
    blocks, depth, start = [], 0, None
    for index, char in enumerate(text):
        if char == "{":
            if depth == 0:
                start = index
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0 and start is not None:
                blocks.append(text[start:index + 1])
    return [b for b in blocks if '"request_id"' in b]


@pytest.mark.slow
def test_the_readme_quotes_what_the_default_quickstart_measures(tmp_path, capsys):
    code = main(["quickstart", "--dir", str(tmp_path / "demo"),
                 "--registry", str(tmp_path / "models"), "--no-serve"])
    assert code == 0
    [summary] = [line[len("summary: "):] for line in capsys.readouterr().out.splitlines()
                 if line.startswith("summary: ")]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    quoted = readme.split("<!-- quickstart-summary -->\n", 1)[1].split("\n<!--", 1)[0]
    assert quoted == summary
