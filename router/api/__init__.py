"""HTTP endpoints, one `APIRouter` per resource, assembled by `router.app.create_app`."""

__all__: list[str] = []
