"""Cost-aware LLM router: the online side (everything that runs per request).

`training` (the offline side) imports from here; this package never imports
`training`, so features and predictions cannot drift between the two.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
