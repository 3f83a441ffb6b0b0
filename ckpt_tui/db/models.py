"""Typed SQLAlchemy 2 models: roots -> trainings -> steps -> files."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = 2  # 2: files.role, pins by path, trainings keyed by the steps' parent

ROLE_ARTIFACT = "artifact"  # a file the step's layout names: deleted with the step
ROLE_FOREIGN = "foreign"  # anything else under a step: kept unless asked for after being shown


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value facts about the index itself, e.g. ``schema_version``."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Root(Base):
    __tablename__ = "roots"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    dev: Mapped[int] = mapped_column(BigInteger)
    ino: Mapped[int] = mapped_column(BigInteger)
    scanned_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    trainings: Mapped[list[Training]] = relationship(
        back_populates="root", cascade="all, delete-orphan", passive_deletes=True
    )


class Pin(Base):
    """A pinned step folder, by absolute path: it belongs to the folder, not to one root's
    rows, so nested roots, re-scans and a rename away and back all keep it."""

    __tablename__ = "pins"
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    pinned_at: Mapped[float] = mapped_column(Float)


class Training(Base):
    """A family of steps: ``relpath`` is the folder holding the step folders (unique per
    family, so two families in one folder are two trainings); ``name`` is the training
    folder relative to the root (the folder above ``checkpoints/``, else the steps' parent)."""

    __tablename__ = "trainings"
    __table_args__ = (Index("ix_trainings_root_rel", "root_id", "relpath", unique=True),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    root_id: Mapped[int] = mapped_column(ForeignKey("roots.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    relpath: Mapped[str] = mapped_column(Text)  # the steps' parent; "" when it is the root
    root: Mapped[Root] = relationship(back_populates="trainings")
    steps: Mapped[list[Step]] = relationship(
        back_populates="training", cascade="all, delete-orphan", passive_deletes=True
    )


class Step(Base):
    __tablename__ = "steps"
    __table_args__ = (Index("ix_steps_training_rel", "training_id", "relpath", unique=True),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    training_id: Mapped[int] = mapped_column(ForeignKey("trainings.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(BigInteger)
    dirname: Mapped[str] = mapped_column(Text)
    relpath: Mapped[str] = mapped_column(Text)  # from the root, "/"-separated
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)  # mirrors ``pins``
    unit: Mapped[str] = mapped_column(String(16), default="step")  # "step" or "samples"
    problems: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # from the scan
    config: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)  # cfg.json
    training: Mapped[Training] = relationship(back_populates="steps")
    files: Mapped[list[FileRow]] = relationship(
        back_populates="step", cascade="all, delete-orphan", passive_deletes=True
    )


class FileRow(Base):
    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_step_rel", "step_id", "relpath", unique=True),
        Index("ix_files_state", "state"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"))
    relpath: Mapped[str] = mapped_column(Text)  # from the step directory
    layer: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hook: Mapped[str | None] = mapped_column(Text, nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    disk_bytes: Mapped[int] = mapped_column(BigInteger)
    inode: Mapped[int] = mapped_column(BigInteger)
    dev: Mapped[int] = mapped_column(BigInteger)
    nlink: Mapped[int] = mapped_column(Integer, default=1)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    header: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    meta: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="active")
    claimed_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # set with deleting
    claimed_by: Mapped[int | None] = mapped_column(Integer, nullable=True)  # deletion_runs.id
    role: Mapped[str] = mapped_column(
        String(16), default=ROLE_ARTIFACT, server_default=ROLE_ARTIFACT
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    step: Mapped[Step] = relationship(back_populates="files")


class DeletionRun(Base):
    """One deletion run: who, when, what was asked and what it freed (``history``)."""

    __tablename__ = "deletion_runs"
    __table_args__ = (Index("ix_runs_root_started", "root", "started_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    root: Mapped[str] = mapped_column(Text)  # absolute; kept when the root leaves the index
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    user: Mapped[str] = mapped_column(Text)
    host: Mapped[str] = mapped_column(Text)
    pid: Mapped[int] = mapped_column(Integer)
    face: Mapped[str] = mapped_column(String(16))  # "cli", "tui" or "api"
    command: Mapped[str] = mapped_column(Text)
    rules: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    planned_files: Mapped[int] = mapped_column(Integer, default=0)
    planned_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    planned_disk_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    freed_files: Mapped[int] = mapped_column(Integer, default=0)
    freed_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    freed_disk_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    dirs_removed: Mapped[int] = mapped_column(Integer, default=0)
    # running -> finished | cancelled | stopped | failed; interrupted (finished_by run N)
    outcome: Mapped[str] = mapped_column(String(16))
    finished_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    steps: Mapped[list[DeletionStep]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )


class DeletionStep(Base):
    """What one run did to one step folder."""

    __tablename__ = "deletion_steps"
    __table_args__ = (Index("ix_deletion_steps_path", "path"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("deletion_runs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)  # relative to the run's root
    files_planned: Mapped[int] = mapped_column(Integer, default=0)
    files_deleted: Mapped[int] = mapped_column(Integer, default=0)
    freed_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    freed_disk_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    result: Mapped[str] = mapped_column(Text)
    errors: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, nullable=True)
    run: Mapped[DeletionRun] = relationship(back_populates="steps")
