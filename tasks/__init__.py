"""Task modules: the work of each pipeline stage, as plain functions with thin Prefect wrappers."""
