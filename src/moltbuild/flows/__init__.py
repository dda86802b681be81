"""Flows: the only modules that combine the rooms (build, publish, pipeline, clean, doctor, smoke)."""
