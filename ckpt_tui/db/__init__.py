"""Index database: typed models and an engine with the pragmas deletion relies on."""

from ckpt_tui.db.engine import Database, default_db_url, open_database
from ckpt_tui.db.models import (
    ROLE_ARTIFACT,
    ROLE_FOREIGN,
    SCHEMA_VERSION,
    Base,
    DeletionRun,
    DeletionStep,
    FileRow,
    Meta,
    Pin,
    Root,
    Step,
    Training,
)

__all__ = [
    "ROLE_ARTIFACT",
    "ROLE_FOREIGN",
    "SCHEMA_VERSION",
    "Base",
    "Database",
    "DeletionRun",
    "DeletionStep",
    "FileRow",
    "Meta",
    "Pin",
    "Root",
    "Step",
    "Training",
    "default_db_url",
    "open_database",
]
