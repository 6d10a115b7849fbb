"""``python -m services.media``: run the media service."""

from services.core.service import run_service
from services.media.app import SERVICE

if __name__ == "__main__":
    run_service(SERVICE)
