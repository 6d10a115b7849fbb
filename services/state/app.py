"""The state service: materializes each member's view in Redis and answers snapshot/sync.

Foundation stage: it starts, joins the bus and Redis and reports healthy, and does nothing
else yet. The view, snapshot and sync arrive with the chat-loop issue (#4).
"""

from services.core.service import Service

SERVICE = Service(name="state", needs_redis=True)
