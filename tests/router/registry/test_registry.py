"""The registry: immutable versions, an atomic current pointer, promote and rollback."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path

import pytest

from router.errors import ArtifactError, ConfigError
from router.registry import Registry
from tests.router import app_fixtures

# A real trained model, shared by the session (pytest finds it as a module attribute).
tiny_artifact = app_fixtures.tiny_artifact


def make_artifact(folder: Path, *, auc: float = 0.7, version_id: str | None = None) -> Path:
    """A stand-in version (no real model): for the pointer and history mechanics,
    promoted with `verify=False`; promotion's checks get real artifacts."""
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
    registry.promote("v1", verify=False)
    registry.promote("v2", verify=False)
    registry.promote("v3", verify=False)
    assert registry.current() == registry.root / "versions" / "v3"
    assert (registry.root / "CURRENT").read_text() == "v3\n"
    assert [v.id for v in registry.versions() if v.is_current] == ["v3"]

    assert registry.rollback(verify=False) == "v2"
    assert registry.current_version() == "v2"
    assert registry.rollback(verify=False) == "v1"
    with pytest.raises(ArtifactError, match=r"nothing to roll back to \(current: v1"):
        registry.rollback(verify=False)
    assert registry.current_version() == "v1"
    actions = [(e["action"], e["version"], e["previous"]) for e in registry.history()]
    assert actions == [("promote", "v1", None), ("promote", "v2", "v1"),
                       ("promote", "v3", "v2"), ("rollback", "v2", "v3"),
                       ("rollback", "v1", "v2")]


def test_rollback_after_promoting_the_same_version_twice_goes_to_the_one_before(
        registry: Registry, tmp_path: Path) -> None:
    for i in (1, 2):
        registry.add(make_artifact(tmp_path / f"a{i}"), version_id=f"v{i}")
    registry.promote("v1", verify=False)
    registry.promote("v2", verify=False)
    registry.promote("v2", verify=False)
    assert registry.rollback(verify=False) == "v1"


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
    registry.promote("v1", reason="first", verify=False)
    shown = registry.show()
    assert shown["version_id"] == "v1" and shown["is_current"] is True
    assert shown["metrics"] == {"auc": 0.8}
    assert shown["files"] == ["meta.json", "quality.lgb"]
    assert [e["reason"] for e in shown["history"]] == ["first"]


def test_readers_never_see_a_half_written_pointer(registry: Registry, tmp_path: Path) -> None:
    for i in (1, 2):
        registry.add(make_artifact(tmp_path / f"a{i}"), version_id=f"v{i}")
    registry.promote("v1", verify=False)
    seen: set[str | None] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(registry.current_version())

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(200):
        registry.promote("v2" if i % 2 else "v1", verify=False)
    stop.set()
    reader.join()
    assert seen <= {"v1", "v2"}


def test_default_root_comes_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROUTER_REGISTRY", str(tmp_path / "elsewhere"))
    assert Registry().root == tmp_path / "elsewhere"


def real_artifact(tiny_artifact: Path, folder: Path, *, auc: float = 0.7) -> Path:
    """A copy of a real trained model with its own `metrics` (meta.json is not
    checksummed: it holds the checksums)."""
    shutil.copytree(tiny_artifact, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["metrics"] = {"auc": auc}
    meta.pop("version_id", None)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_models_commands_list_promote_rollback_and_show(
        registry: Registry, tmp_path: Path, tiny_artifact: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main

    registry.add(real_artifact(tiny_artifact, tmp_path / "a", auc=0.7), version_id="v1")
    registry.add(real_artifact(tiny_artifact, tmp_path / "b", auc=0.75), version_id="v2")
    reg = ["--registry", str(registry.root)]
    assert main(["models", "promote", "v1", *reg]) == 0
    assert main(["models", "promote", "v2", *reg]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "promoted v2 (was v1; verified: checksums, load and a check prediction)")
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


@pytest.mark.parametrize("damage", ["checksum", "unloadable", "format"])
def test_promote_refuses_a_version_that_would_not_serve(
        registry: Registry, tmp_path: Path, tiny_artifact: Path, damage: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main

    registry.add(real_artifact(tiny_artifact, tmp_path / "good"), version_id="v1")
    registry.promote("v1")
    bad = real_artifact(tiny_artifact, tmp_path / "bad")
    meta = json.loads((bad / "meta.json").read_text())
    if damage == "checksum":  # a file changed after training
        (bad / "quality.lgb").write_text("not a booster")
        expected = "quality.lgb: corrupt (sha256 differs from meta.json)"
    elif damage == "unloadable":  # consistent checksums, but no LightGBM model inside
        (bad / "quality.lgb").write_text("not a booster")
        meta["files"]["quality.lgb"] = hashlib.sha256(b"not a booster").hexdigest()
        expected = "cannot be read"
    else:
        meta["format_version"] = 1
        expected = "artifact format version 1"
    (bad / "meta.json").write_text(json.dumps(meta))
    registry.add(bad, version_id="v2")

    with pytest.raises(ArtifactError, match="version 'v2' cannot be served: ") as info:
        registry.promote("v2")
    assert expected in str(info.value) and "CURRENT was not changed" in str(info.value)
    assert main(["models", "promote", "v2", "--registry", str(registry.root)]) == 1
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    # Nothing moved: a server started now still serves v1.
    assert registry.current_version() == "v1"
    assert [e["version"] for e in registry.history()] == ["v1"]


def test_rollback_refuses_a_target_that_no_longer_serves(
        registry: Registry, tmp_path: Path, tiny_artifact: Path) -> None:
    for name in ("v1", "v2"):
        registry.add(real_artifact(tiny_artifact, tmp_path / name), version_id=name)
        registry.promote(name)
    (registry.path_of("v1") / "quality.lgb").write_text("bit rot")
    with pytest.raises(ArtifactError, match="version 'v1' cannot be served: .*sha256"):
        registry.rollback()
    assert registry.current_version() == "v2"


@pytest.mark.parametrize("pointer", ["../../outside", "/tmp/elsewhere", "v1/../../x"])
def test_a_hand_edited_current_outside_the_registry_is_refused(
        registry: Registry, tmp_path: Path, pointer: str) -> None:
    registry.add(make_artifact(tmp_path / "a"), version_id="v1")
    make_artifact(tmp_path / "outside")
    make_artifact(tmp_path / "elsewhere")
    (registry.root / "CURRENT").write_text(pointer + "\n")
    with pytest.raises(ArtifactError, match="which is not a version id; CURRENT may only name "
                                            "a folder under"):
        registry.current()
    # The registry stays operable: list works and promote repairs the pointer.
    assert [v.id for v in registry.versions()] == ["v1"]
    registry.promote("v1", verify=False)
    assert registry.current() == registry.root / "versions" / "v1"


def test_a_version_linked_from_outside_the_registry_is_refused(
        registry: Registry, tmp_path: Path) -> None:
    registry.add(make_artifact(tmp_path / "a"), version_id="v1")
    (registry.root / "versions" / "v2").symlink_to(make_artifact(tmp_path / "outside"))
    (registry.root / "CURRENT").write_text("v2\n")
    with pytest.raises(ArtifactError, match=r"version 'v2' resolves to .*outside, outside "
                                            r"the registry"):
        registry.current()
    with pytest.raises(ArtifactError, match="outside the registry"):
        registry.promote("v2", verify=False)
