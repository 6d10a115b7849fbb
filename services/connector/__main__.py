"""``python -m services.connector``: run the connector service."""

from services.connector.app import SERVICE
from services.core.service import run_service

if __name__ == "__main__":
    run_service(SERVICE)
