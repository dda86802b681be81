"""Run the API: python -m moltbook_api (PORT, HOST, APP_VERSION from the environment)."""

import os
import signal
import sys

from .app import make_server


def main() -> None:
    server = make_server(
        os.environ.get("HOST", "0.0.0.0"),
        int(os.environ.get("PORT", "8000")),
        os.environ.get("APP_VERSION", "dev"),
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"moltbook-api listening on {server.server_address[0]}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
