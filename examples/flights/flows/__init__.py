"""The flights team's own Prefect flows."""
