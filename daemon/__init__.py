"""rkd's per-user daemon: sockets, pipeline, storage and schedules."""
