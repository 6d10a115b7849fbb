"""``python -m services.state``: run the state service."""

from services.core.service import run_service
from services.state.app import SERVICE

if __name__ == "__main__":
    run_service(SERVICE)
