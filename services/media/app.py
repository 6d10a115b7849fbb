"""The media service: voice through the backends' signaling, bridged to members' desktops.

Foundation stage: it starts, joins the bus and reports healthy, and does nothing else yet.
Voice arrives with a later issue.
"""

from services.core.service import Service

SERVICE = Service(name="media")
