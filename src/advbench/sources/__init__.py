"""Input sources, registered by kind. Importing this package registers the built-in ones."""

from advbench.sources import mimic_cxr_jpg  # noqa: F401
from advbench.sources.base import SOURCES, Source, SourceConfig, SourceError

__all__ = ["SOURCES", "Source", "SourceConfig", "SourceError"]
