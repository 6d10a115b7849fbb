"""``python -m services.media``: run the media service."""

from services.media.app import SERVICE
from services.core.service import run_service

if __name__ == "__main__":
    run_service(SERVICE)
