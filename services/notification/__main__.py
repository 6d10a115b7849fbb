"""``python -m services.notification``: run the notification service."""

from services.core.service import run_service
from services.notification.app import SERVICE

if __name__ == "__main__":
    run_service(SERVICE)
