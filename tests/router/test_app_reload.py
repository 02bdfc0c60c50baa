"""Hot reload: a promoted version is served without a restart; a corrupt one is refused."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from router.errors import ArtifactError
from router.registry import Registry
from tests.router import app_fixtures
from tests.router.app_fixtures import wait_for

# Fixtures shared by the app tests (pytest finds them as module attributes).
router_factory = app_fixtures.router_factory
tiny_artifact = app_fixtures.tiny_artifact


def served_version(server: Any) -> str:
    return server.client.post("/v1/route", json={"messages": "hello"}).json()["model_version"]


def test_promote_is_picked_up_and_corrupt_versions_are_refused(
        router_factory: Any, tiny_artifact: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    registry.add(tiny_artifact, version_id="v1")
    registry.promote("v1")
    server = router_factory(registry_dir=registry.root)
    assert served_version(server) == "v1"
    assert server.client.get("/readyz").json()["model_version"] == "v1"

    registry.add(tiny_artifact, version_id="v2")
    registry.promote("v2")
    assert wait_for(lambda: served_version(server) == "v2")
    metrics = server.client.get("/metrics").text
    assert 'router_model_reloads_total{result="ok"} 1.0' in metrics
    assert 'router_model_info{version="v2"} 1.0' in metrics
    assert 'router_model_info{version="v1"}' not in metrics

    registry.add(tiny_artifact, version_id="v3")
    (registry.path_of("v3") / "quality.lgb").write_text("not a booster")
    with pytest.raises(ArtifactError, match="sha256 differs"):
        registry.promote("v3")  # verified first: refused, CURRENT stays v2
    # A replica started now (a restart, a scale-up) serves v2 instead of exiting.
    assert served_version(router_factory(registry_dir=registry.root)) == "v2"
    # A version that rots after its promotion is still refused by running servers.
    registry.promote("v3", verify=False)
    assert wait_for(lambda: 'router_model_reloads_total{result="error"} 1.0'
                    in server.client.get("/metrics").text)
    time.sleep(0.2)  # several more polls: the refused version is not retried or recounted
    metrics = server.client.get("/metrics").text
    assert 'router_model_reloads_total{result="error"} 1.0' in metrics
    assert served_version(server) == "v2"
    # Chat keeps working on the old model too.
    r = server.client.post("/v1/chat/completions",
                           json={"model": "router", "messages": [{"role": "user",
                                                                  "content": "hi"}]})
    assert r.status_code == 200

    registry.rollback()  # back to v2: nothing to load, still v2
    registry.add(tiny_artifact, version_id="v4")
    registry.promote("v4")
    assert wait_for(lambda: served_version(server) == "v4")


def test_model_dir_is_served_and_reloaded_when_its_meta_changes(
        router_factory: Any, tiny_artifact: Path, tmp_path: Path) -> None:
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_artifact, folder)
    server = router_factory(model_dir=folder)
    first = served_version(server)
    meta = json.loads((folder / "meta.json").read_text())
    meta["version_id"] = "retrained-in-place"
    (folder / "meta.json").write_text(json.dumps(meta))
    assert wait_for(lambda: served_version(server) == "retrained-in-place")
    assert first != "retrained-in-place"


def test_the_served_model_is_out_of_the_collectors_reach(
        router_factory: Any, tiny_artifact: Path, tmp_path: Path) -> None:
    import gc

    def collectable(obj: object) -> bool:
        assert gc.is_tracked(obj)
        return any(id(obj) in {id(o) for o in gc.get_objects(generation)}
                   for generation in range(3))

    registry = Registry(tmp_path / "models")
    registry.add(tiny_artifact, version_id="v1")
    registry.promote("v1")
    gc.unfreeze()
    try:
        router_factory(registry_dir=registry.root, gc_freeze=False)
        assert gc.get_freeze_count() == 0
        server = router_factory(registry_dir=registry.root)  # the default: on
        # The feature extractor was live at start-up: frozen, so never scanned again.
        assert gc.get_freeze_count() > 0 and not collectable(server.ctx.service.model.features_)
        registry.add(tiny_artifact, version_id="v2")
        registry.promote("v2")
        assert wait_for(lambda: served_version(server) == "v2")
        assert not collectable(server.ctx.service.model.features_)  # the new one too
    finally:
        gc.unfreeze()


def test_a_running_server_refuses_a_current_edited_to_point_outside(
        router_factory: Any, tiny_artifact: Path, tmp_path: Path) -> None:
    import shutil

    registry = Registry(tmp_path / "models")
    registry.add(tiny_artifact, version_id="v1")
    registry.promote("v1")
    server = router_factory(registry_dir=registry.root)
    shutil.copytree(tiny_artifact, tmp_path / "elsewhere")
    (registry.root / "CURRENT").write_text("../../elsewhere\n")
    assert wait_for(lambda: 'router_model_reloads_total{result="error"} 1.0'
                    in server.client.get("/metrics").text)
    time.sleep(0.2)  # more polls: said and counted once
    assert 'router_model_reloads_total{result="error"} 1.0' in server.client.get("/metrics").text
    assert served_version(server) == "v1"
