"""``python -m ui``: the OpenChat desktop app."""

from ui.app import main

if __name__ == "__main__":
    main()
