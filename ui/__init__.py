"""The OpenChat desktop app (Dear PyGui): a thin client of the member's stack."""
