"""Test helpers that run real servers on 127.0.0.1 (llama-server, a fault-injecting HTTP server)."""
