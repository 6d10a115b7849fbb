"""The notification service: unread and mention counts, read cursors, notification policy.

Foundation stage: it starts, joins the bus and Redis and reports healthy, and does nothing
else yet. Counts, cursors and policy arrive with the unread/notifications issue (#6).
"""

from services.core.service import Service

SERVICE = Service(name="notification", needs_redis=True)
