"""``python -m services.connector``: run the connector service."""

import gc

from services.connector.app import SERVICE
from services.core.service import run_service

if __name__ == "__main__":
    # Gap fill builds tens of thousands of short-lived event models per second; with the default
    # gen-0 threshold (700) the collector runs every few events and, with many objects alive,
    # promotes them into costly older-generation passes (~15 % of the CPU of a 20k gap fill).
    # Objects alive after the imports are never garbage: keep them out of every collection.
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    run_service(SERVICE)
