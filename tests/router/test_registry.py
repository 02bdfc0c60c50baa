"""The registry: immutable versions, an atomic current pointer, promote and rollback."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from router.errors import ArtifactError, ConfigError
from router.registry import Registry


def make_artifact(folder: Path, *, auc: float = 0.7, version_id: str | None = None) -> Path:
    folder.mkdir(parents=True)
    meta = {"format_version": 1, "created": "2025-01-01T00:00:00+00:00",
            "metrics": {"auc": auc}}
    if version_id:
        meta["version_id"] = version_id
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "quality.lgb").write_text("tree\n")
    return folder


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models")


def test_empty_registry_has_no_current_and_no_versions(registry: Registry) -> None:
    assert registry.current() is None
    assert registry.current_version() is None
    assert registry.versions() == []


def test_add_copies_an_immutable_version_and_records_its_id(
        registry: Registry, tmp_path: Path) -> None:
    src = make_artifact(tmp_path / "a", auc=0.71)
    vid = registry.add(src, version_id="v1")
    assert vid == "v1"
    assert src.is_dir(), "add copies by default; the source stays"
    stored = registry.root / "versions" / "v1"
    assert (stored / "quality.lgb").read_text() == "tree\n"
    meta = json.loads((stored / "meta.json").read_text())
    assert meta["version_id"] == "v1" and meta["metrics"] == {"auc": 0.71}
    [info] = registry.versions()
    assert (info.id, info.metrics, info.is_current) == ("v1", {"auc": 0.71}, False)
    # Adding does not promote: a new model never reaches traffic by accident.
    assert registry.current() is None


def test_add_refuses_to_overwrite_an_existing_version(registry: Registry, tmp_path: Path) -> None:
    registry.add(make_artifact(tmp_path / "a", auc=0.7), version_id="v1")
    with pytest.raises(ArtifactError, match="'v1' already exists; versions are immutable"):
        registry.add(make_artifact(tmp_path / "b", auc=0.9), version_id="v1")
    meta = json.loads((registry.root / "versions" / "v1" / "meta.json").read_text())
    assert meta["metrics"]["auc"] == 0.7, "the first version is untouched"
    assert [p.name for p in (registry.root / "versions").iterdir()] == ["v1"]


def test_add_uses_the_artifact_version_id_or_makes_a_new_one(
        registry: Registry, tmp_path: Path) -> None:
    assert registry.add(make_artifact(tmp_path / "a", version_id="from-meta")) == "from-meta"
    generated = registry.add(make_artifact(tmp_path / "b"))
    assert generated.startswith("v") and generated != "from-meta"
    assert {v.id for v in registry.versions()} == {"from-meta", generated}


def test_add_merges_extra_metadata_such_as_the_gate_report(
        registry: Registry, tmp_path: Path) -> None:
    vid = registry.add(make_artifact(tmp_path / "a"), extra_meta={"gate": {"passed": False}})
    assert registry.show(vid)["meta"]["gate"] == {"passed": False}


def test_add_rejects_folders_without_meta_and_bad_ids(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match=r"meta.json: missing; not a trained model folder"):
        registry.add(tmp_path / "empty")
    with pytest.raises(ArtifactError, match="not a folder"):
        registry.add(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"invalid version id '../evil'"):
        registry.add(make_artifact(tmp_path / "a"), version_id="../evil")
    assert registry.versions() == []


def test_promote_swaps_the_pointer_and_rollback_goes_back_one_promotion_at_a_time(
        registry: Registry, tmp_path: Path) -> None:
    for i in (1, 2, 3):
        registry.add(make_artifact(tmp_path / f"a{i}"), version_id=f"v{i}")
    registry.promote("v1")
    registry.promote("v2")
    registry.promote("v3")
    assert registry.current() == registry.root / "versions" / "v3"
    assert (registry.root / "CURRENT").read_text() == "v3\n"
    assert [v.id for v in registry.versions() if v.is_current] == ["v3"]

    assert registry.rollback() == "v2"
    assert registry.current_version() == "v2"
    assert registry.rollback() == "v1"
    with pytest.raises(ArtifactError, match=r"nothing to roll back to \(current: v1"):
        registry.rollback()
    assert registry.current_version() == "v1"
    actions = [(e["action"], e["version"], e["previous"]) for e in registry.history()]
    assert actions == [("promote", "v1", None), ("promote", "v2", "v1"),
                       ("promote", "v3", "v2"), ("rollback", "v2", "v3"),
                       ("rollback", "v1", "v2")]


def test_rollback_after_promoting_the_same_version_twice_goes_to_the_one_before(
        registry: Registry, tmp_path: Path) -> None:
    for i in (1, 2):
        registry.add(make_artifact(tmp_path / f"a{i}"), version_id=f"v{i}")
    registry.promote("v1")
    registry.promote("v2")
    registry.promote("v2")
    assert registry.rollback() == "v1"


def test_unknown_version_names_the_known_ones(registry: Registry, tmp_path: Path) -> None:
    registry.add(make_artifact(tmp_path / "a"), version_id="v1")
    with pytest.raises(ArtifactError, match=r"no version 'v9'") as info:
        registry.promote("v9")
    assert info.value.hint == "known versions: v1"
    with pytest.raises(ArtifactError, match=r"no version 'v9'"):
        registry.show("v9")
    assert registry.current() is None, "a failed promote changes nothing"


def test_current_pointing_at_a_missing_folder_is_an_error(
        registry: Registry, tmp_path: Path) -> None:
    registry.root.mkdir(parents=True)
    (registry.root / "CURRENT").write_text("gone\n")
    with pytest.raises(ArtifactError, match=r"names version 'gone' but .* does not exist"):
        registry.current()


def test_show_reports_metadata_files_and_history(registry: Registry, tmp_path: Path) -> None:
    registry.add(make_artifact(tmp_path / "a", auc=0.8), version_id="v1")
    registry.promote("v1", reason="first")
    shown = registry.show()
    assert shown["version_id"] == "v1" and shown["is_current"] is True
    assert shown["metrics"] == {"auc": 0.8}
    assert shown["files"] == ["meta.json", "quality.lgb"]
    assert [e["reason"] for e in shown["history"]] == ["first"]


def test_readers_never_see_a_half_written_pointer(registry: Registry, tmp_path: Path) -> None:
    for i in (1, 2):
        registry.add(make_artifact(tmp_path / f"a{i}"), version_id=f"v{i}")
    registry.promote("v1")
    seen: set[str | None] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(registry.current_version())

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(200):
        registry.promote("v2" if i % 2 else "v1")
    stop.set()
    reader.join()
    assert seen <= {"v1", "v2"}


def test_default_root_comes_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROUTER_REGISTRY", str(tmp_path / "elsewhere"))
    assert Registry().root == tmp_path / "elsewhere"


def test_models_commands_list_promote_rollback_and_show(
        registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main

    registry.add(make_artifact(tmp_path / "a", auc=0.7), version_id="v1")
    registry.add(make_artifact(tmp_path / "b", auc=0.75), version_id="v2")
    reg = ["--registry", str(registry.root)]
    assert main(["models", "promote", "v1", *reg]) == 0
    assert main(["models", "promote", "v2", *reg]) == 0
    capsys.readouterr()
    assert main(["models", "list", *reg]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["version", "created", "auc"]
    assert lines[1].split()[0] == "v1" and lines[1].split()[-1] == "0.7000"
    assert lines[2].split()[:2] == ["*", "v2"] and lines[2].split()[-1] == "0.7500"

    assert main(["models", "rollback", *reg]) == 0
    assert capsys.readouterr().out == "rolled back to v1 (was v2)\n"
    assert main(["models", "show", *reg]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version_id"] == "v1" and shown["is_current"] is True


def test_models_promote_unknown_version_prints_error_and_hint(
        registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main

    registry.add(make_artifact(tmp_path / "a"), version_id="v1")
    assert main(["models", "promote", "nope", "--registry", str(registry.root)]) == 1
    err = capsys.readouterr().err
    assert "error: " in err and "no version 'nope'" in err
    assert "hint: known versions: v1" in err
    assert registry.current_version() is None


def test_models_show_prints_number_lists_on_one_line() -> None:
    from training.commands.models import compact_json

    meta = {"version_id": "v1", "empty": {}, "none": [], "gate": {"sources": [
        {"name": "eval table", "champion_curve": {"bars": [0.0, 0.5, 1.0],
                                                   "lambdas": []}}]}}
    text = compact_json(meta)
    assert json.loads(text) == meta
    assert '"bars": [0.0, 0.5, 1.0]' in text and len(text.splitlines()) == 16
