"""``python -m services.notification``: run the notification service."""

from services.notification.app import SERVICE
from services.core.service import run_service

if __name__ == "__main__":
    run_service(SERVICE)
