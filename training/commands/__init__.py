"""Offline sub-commands of `router`, found through the `router.commands` entry points."""
