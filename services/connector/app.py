"""The connector service: the only process that speaks REST/realtime to OpenChat backends.

Foundation stage: it starts, joins the bus, ensures the events stream and reports healthy, and
does nothing else yet. Sessions per (member, server) arrive with the chat-loop issue (#4).
"""

from services.core.service import Service

SERVICE = Service(name="connector")
