"""Real-server integration test harness for libkv (see README.md)."""
