import socket
from pathlib import Path

import pytest

from router.cli import main
from router.predictor import QualityModel
from router.registry import Registry
from training.commands.quickstart import EXAMPLE_PROMPTS


def test_quickstart_trains_evaluates_routes_and_promotes(tmp_path, capsys):
    registry_root = tmp_path / "models"
    code = main(["quickstart", "--dir", str(tmp_path / "demo"), "--prompts", "300",
                 "--registry", str(registry_root), "--no-serve"])
    assert code == 0
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if line.startswith("[")]
    assert [s[:5] for s in steps] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    assert (tmp_path / "demo" / "eval.png").stat().st_size > 10_000
    # Each routed prompt is shown (shortened) with one line per candidate, the choice marked.
    model = QualityModel.load(tmp_path / "demo" / "model")
    for prompt in EXAMPLE_PROMPTS:
        shown = prompt if len(prompt) <= 76 else prompt[:73] + "..."
        table = out.split(f'"{shown}"\n', 1)[1].split("\n\n", 1)[0].splitlines()
        rows = table[1:1 + len(model.models_)]
        assert sorted(r[6:26].strip() for r in rows) == sorted(model.models_)
        assert sum(r.startswith("    ->") for r in rows) == 1
    assert "summary: On 200 prompts it never saw, the router" in out
    assert "default (default (" not in out
    registry = Registry(registry_root)
    assert registry.current_version() == model.version


def test_a_busy_port_is_refused_before_any_work(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["quickstart", "--dir", str(tmp_path / "demo"), "--port", str(port)])
    assert code == 1
    err = capsys.readouterr().err
    assert f"error: port {port} on 127.0.0.1 is already in use" in err
    assert "--port" in err
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("interrupt", ["exit code", "KeyboardInterrupt"])
def test_ctrl_c_while_serving_ends_quietly(tmp_path, capsys, monkeypatch, interrupt):
    import router.cli

    real_main = router.cli.main

    def main_with_interrupted_serve(argv):
        if argv[0] != "serve":
            return real_main(argv)
        if interrupt == "KeyboardInterrupt":  # the signal reaches the quickstart itself
            raise KeyboardInterrupt
        return 130  # `router serve` caught it and exited as interrupted

    monkeypatch.setattr(router.cli, "main", main_with_interrupted_serve)
    code = real_main(["quickstart", "--dir", str(tmp_path / "demo"), "--prompts", "200",
                      "--registry", str(tmp_path / "models"), "--port", "0"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.rstrip().endswith("stopped")
    assert captured.err == "" or ("error" not in captured.err and "interrupted" not in
                                  captured.err)


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
