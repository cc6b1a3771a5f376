"""Deployments: schedules and triggers for the flows; nothing else."""
