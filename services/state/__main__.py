"""``python -m services.state``: run the state service."""

from services.state.app import SERVICE
from services.core.service import run_service

if __name__ == "__main__":
    run_service(SERVICE)
