"""Bus contracts of the version check (issue 18; features 13, P4).

==========================================  =========  ==================  =================================
subject                                     args       result              served by
==========================================  =========  ==================  =================================
``oc.<member>.cmd.stack.version``           ``Empty``  ``StackVersion``    any service (queue group ``stack``)
``oc.<member>.cmd.<service>.version``       ``Empty``  ``ServiceVersion``  that service
==========================================  =========  ==================  =================================

A desktop compares ``StackVersion.version`` with its own (``services.core.version.is_newer``) and,
when the stack is newer, shows where to get the new version (``release_url``); nothing is
downloaded or installed by the stack.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from services.core.contracts.bus import Contract

STACK = "stack"
VERB = "version"


class ServiceVersion(Contract):
    service: str = Field(max_length=64)
    version: str = Field(max_length=64)
    python: str = Field(max_length=32)
    started_at: datetime


class StackVersion(Contract):
    version: str = Field(max_length=64)
    release_url: str | None = Field(default=None, max_length=512)  # OPENCHAT_RELEASE_URL of the stack
    answered_by: str = Field(max_length=64)  # the service that answered
