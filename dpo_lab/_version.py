"""The package version, alone at the bottom so that any layer can record it (manifests do)."""

__version__ = "0.1.0"
