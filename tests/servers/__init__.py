"""Real servers the tests start on 127.0.0.1 (installed by .ci/install-servers)."""
