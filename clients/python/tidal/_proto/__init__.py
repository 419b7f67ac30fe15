"""Stubs generated from proto/tidal.proto by clients/python/gen.sh; do not edit."""
