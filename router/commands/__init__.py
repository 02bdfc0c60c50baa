"""Online sub-commands of `router` (serve, route, fake-upstream), found through the
`router.commands` entry-point group; each module has `register(subparsers)`."""

__all__: list[str] = []
