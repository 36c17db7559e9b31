"""FastAPI dependencies, each named once: the store, the queue, the settings, the caller's key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.auth import require
from service.config import Settings
from service.jobs import JobQueue
from service.schemas import ApiKey, Role
from service.store import Store


def get_store(request: Request) -> Store:
    """The app's store (opened in the lifespan)."""
    return request.app.state.store


def get_queue(request: Request) -> JobQueue:
    """The app's job queue (opened in the lifespan)."""
    return request.app.state.queue


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


StoreDep = Annotated[Store, Depends(get_store)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

ViewerKey = Annotated[ApiKey, Depends(require(Role.viewer))]
"""Any live key (reads)."""
IngestKey = Annotated[ApiKey, Depends(require(Role.ingest))]
"""Keys that may post segments and labels."""
AdminKey = Annotated[ApiKey, Depends(require(Role.admin))]
"""Admin keys."""
