"""Online sub-commands of `router`; each module exposes `register(subparsers)`."""
